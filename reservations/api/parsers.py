import codecs
import json
from io import BytesIO

from django.conf import settings
from rest_framework import renderers, status
from rest_framework.exceptions import APIException, ParseError
from rest_framework.parsers import BaseParser, JSONParser

# No request of this API nests deeper than a few levels. Python's json recurses once per level and
# raises RecursionError (a 500) near a thousand, and whatever walks the parsed value recurses again.
MAX_JSON_DEPTH = 32


def nesting_exceeds(text, limit):
    """Whether the JSON in `text` opens more than `limit` arrays/objects at once (brackets in strings
    do not count). A loop, not a parser: it must not recurse on exactly the input it is refusing."""
    depth, in_string, escaped = 0, False, False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > limit:
                return True
        elif char in "]}":
            depth -= 1
    return False


class BodyTooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "The request body is too large."
    default_code = "too_large"


class BoundedJSONParser(BaseParser):
    """JSON bodies of at most API_MAX_BODY_BYTES (413 beyond) nested at most MAX_JSON_DEPTH deep,
    decoded by DRF's JSONParser.

    Not a JSONParser itself: DRF reads a JSONParser's body whole through request.body, which refuses
    more than DATA_UPLOAD_MAX_MEMORY_SIZE with Django's HTML 400 before any parser runs. This one is
    handed the stream, refuses by Content-Length before reading, and reads at most the limit.
    """

    media_type = "application/json"
    renderer_class = renderers.JSONRenderer

    def parse(self, stream, media_type=None, parser_context=None):
        parser_context = parser_context or {}
        limit = settings.API_MAX_BODY_BYTES
        request = parser_context.get("request")
        declared = request.META.get("CONTENT_LENGTH") if request is not None else None
        if declared and declared.isdigit() and int(declared) > limit:
            raise BodyTooLarge(f"The request body is larger than {limit} bytes.")
        body = stream.read(limit + 1) if stream is not None else b""
        if len(body) > limit:
            raise BodyTooLarge(f"The request body is larger than {limit} bytes.")
        # Decoded as JSONParser will decode it, so the scan sees the characters json will see.
        try:
            text = codecs.decode(body, parser_context.get("encoding", settings.DEFAULT_CHARSET))
        except (LookupError, UnicodeDecodeError) as exc:
            raise ParseError(f"JSON parse error - {exc}") from None
        if nesting_exceeds(text, MAX_JSON_DEPTH):
            raise ParseError(f"JSON parse error - nested deeper than {MAX_JSON_DEPTH} levels.")
        data = JSONParser().parse(BytesIO(body), media_type, parser_context)
        # json reads "\ud800" as half a character, which nothing can encode: not PostgreSQL, not the
        # JSONRenderer that echoes an unknown key back in a 400. Refused here, once, for every field.
        try:
            json.dumps(data, ensure_ascii=False).encode()
        except UnicodeEncodeError:
            raise ParseError("JSON parse error - a \\u escape gives half of a surrogate pair.") from None
        return data
