"""The pieces every app's REST API builds on: one reading of a datetime (fields), a serializer that
refuses unknown keys (serializers), and who a client is with the rates counted per client
(throttling). It sits below the apps and imports none of them, so the booking, trainer and serving
APIs and the front door share these without one app importing another's API layer."""
