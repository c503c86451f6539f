"""`smtp` tools: one plain-text email, rendered from templates, sent with smtplib."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from runner.core import templates
from runner.core.errors import ToolError
from runner.core.vocabulary import ErrorKind
from runner.kinds.base import TOOL_ROOTS, Call, Checks, ToolCall
from runner.lang.model import Tool


class Smtp:
    """The `smtp` tool kind: its spec is the message's fields (templates) and server."""

    name = "smtp"
    calls_out = True

    def build(self, raw: Any) -> Any:
        return raw

    def check(self, checks: Checks, tool: Tool) -> None:
        for key, value in tool.spec.items():
            if isinstance(value, str):
                checks.template((*tool.path, "smtp", key), value, TOOL_ROOTS)

    def request(self, tool: Tool, ctx: Mapping[str, Any]) -> Mapping[str, Any] | None:
        return {
            k: v if isinstance(v, int) else str(templates.render(v, ctx))
            for k, v in tool.spec.items()
        }

    def connect(self, tool: Tool, *, flow_file: Path, http_transport: Any = None) -> ToolCall:
        return SmtpTool(tool)


class SmtpTool:
    """Sends one plain-text email with smtplib. An effect's Message-ID is derived from
    its idempotency key, so a message sent again is recognisably the same one."""

    def __init__(self, tool: Tool) -> None:
        self.tool = tool

    def __call__(self, call: Call) -> Any:
        import smtplib
        import ssl
        from email.message import EmailMessage

        mail = dict(call.request or {})
        tls = mail.get("tls") or {465: "ssl", 587: "starttls"}.get(mail.get("port", 25), "none")
        port = int(mail.get("port") or {"ssl": 465, "starttls": 587}.get(tls, 25))
        message = EmailMessage()
        message["From"], message["To"] = mail["from"], mail["to"]
        message["Subject"] = mail["subject"]
        message["Message-ID"] = message_id(call.idempotency_key, mail["from"])
        message.set_content(mail["body"])
        connected = False
        try:
            client_class = smtplib.SMTP_SSL if tls == "ssl" else smtplib.SMTP
            with client_class(mail["host"], port, timeout=call.timeout_seconds) as client:
                connected = True
                if tls == "starttls":
                    client.starttls(context=ssl.create_default_context())
                if mail.get("username"):
                    client.login(mail["username"], mail.get("password", ""))
                refused = client.send_message(message)
        except smtplib.SMTPResponseException as exc:
            kind = ErrorKind.SMTP_4XX if 400 <= exc.smtp_code < 500 else ErrorKind.SMTP_5XX
            raise ToolError(f"SMTP {exc.smtp_code}: {exc.smtp_error!r}", kind) from exc
        except smtplib.SMTPRecipientsRefused as exc:
            raise ToolError(
                f"every recipient was refused: {exc.recipients}", ErrorKind.SMTP_5XX
            ) from exc
        except (TimeoutError, OSError, smtplib.SMTPException) as exc:
            kind = ErrorKind.TIMEOUT if isinstance(exc, TimeoutError) else ErrorKind.CONNECTION
            raise ToolError(
                f"SMTP {type(exc).__name__}: {exc}", kind, maybe_sent=connected
            ) from exc
        return {"message_id": message["Message-ID"], "refused": sorted(refused) if refused else []}


def message_id(key: str | None, sender: str) -> str:
    """A Message-ID that depends only on the idempotency key (random without one)."""
    import hashlib
    import uuid

    domain = sender.rpartition("@")[2].strip(" >") or "runner.invalid"
    token = hashlib.sha256(key.encode()).hexdigest()[:40] if key else uuid.uuid4().hex
    return f"<{token}@{domain}>"


KIND = Smtp()
