"""OpenAI-style errors: every refusal the gateway makes has the body {"error": {"message", "type", "code", "param"}}."""
from __future__ import annotations

import json

from starlette.responses import Response


class GatewayError(Exception):
    """A refusal or failure with its HTTP status; raised anywhere in a request, answered by the app's handler."""

    def __init__(self, status: int, message: str, type: str = "invalid_request_error", code: str | None = None,
                 param: str | None = None, headers: dict[str, str] | None = None, reason: str | None = None) -> None:
        """`reason`: what the audit log records instead of `message` when the message quotes upstream text."""
        super().__init__(message)
        self.reason = reason or message
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.headers = headers

    def payload(self) -> dict[str, dict[str, str | None]]:
        return {"error": {"message": self.message, "type": self.type, "code": self.code, "param": self.param}}

    def response(self) -> Response:
        return Response(json.dumps(self.payload()).encode(), status_code=self.status, headers=self.headers,
                        media_type="application/json")

    def sse(self) -> bytes:
        """The same error as the last event of a stream that has already begun (the status line is gone)."""
        return b"data: " + json.dumps(self.payload()).encode() + b"\n\ndata: [DONE]\n\n"


def bad_request(message: str, param: str | None = None, code: str | None = None) -> GatewayError:
    return GatewayError(400, message, "invalid_request_error", code, param)
