"""The replica's refusals: each one becomes a JSON error response with its own HTTP status."""


class ReplicaError(Exception):
    status = 400
    code = "bad_request"

    def __init__(self, detail, field=None, retry_after=None):
        super().__init__(detail)
        self.detail = detail
        self.field = field
        self.retry_after = retry_after

    def body(self):
        body = {"error": self.code, "detail": self.detail}
        if self.field:
            body["field"] = self.field
        return body


class BadRequest(ReplicaError):
    status, code = 400, "bad_request"


class BadImage(ReplicaError):
    status, code = 400, "bad_image"

    def __init__(self, detail, field="images"):
        super().__init__(detail, field=field)


class Unauthorized(ReplicaError):
    status, code = 401, "unauthorized"


class NotFound(ReplicaError):
    status, code = 404, "not_found"


class UnknownModel(ReplicaError):
    status, code = 404, "unknown_model"


class UnknownVersion(ReplicaError):
    status, code = 404, "unknown_version"


class MethodNotAllowed(ReplicaError):
    status, code = 405, "method_not_allowed"


class RequestTimeout(ReplicaError):
    status, code = 408, "timeout"


class WeightsMismatch(ReplicaError):
    status, code = 409, "weights_mismatch"


class ModelBusy(ReplicaError):
    status, code = 409, "model_busy"


class TooLarge(ReplicaError):
    status, code = 413, "too_large"


class ModelTooLarge(ReplicaError):
    status, code = 422, "model_too_large"


class LoadFailed(ReplicaError):
    """The weights could not be read or loaded here (missing on this node's storage, say): another
    replica may well serve the request."""

    status, code = 503, "load_failed"


class InferenceFailed(ReplicaError):
    status, code = 500, "inference_failed"


class NoRoom(ReplicaError):
    status, code = 503, "no_room"


class Draining(ReplicaError):
    status, code = 503, "draining"
