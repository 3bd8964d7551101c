"""The pieces every app's REST API builds on: one reading of a datetime (fields) and a serializer that
refuses unknown keys (serializers). It sits below the apps and imports none of them, so the trainer's,
serving's and the booking API share these without one app importing another's API layer."""
