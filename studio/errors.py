"""The one place where an exception of an event becomes what the user reads.

Everything a Gradio event does — Gradio's own preprocessing of the inputs, our handler,
the postprocessing of its outputs — runs inside :meth:`Blocks.process_api`. Whatever it
raises is turned into a message here:

- :class:`UserError` (raised by :func:`studio.context.fail` and friends): a sentence we
  wrote for the user, shown as it is;
- a backend :class:`~backend.errors.StudioError`: its text in the user's language;
- anything else — a Pillow error naming a file in Gradio's cache, Gradio's "Could not
  preprocess input component ...", a ``gr.Error`` Gradio raised about a path, a bug of
  ours — a plain sentence with a reference, while the exception with its traceback goes
  to the log under the same reference.

So no server path or library text reaches a browser, whichever handler failed and
whichever library raised, without each handler having to remember it.
"""

from __future__ import annotations

import html
import logging
import secrets
from typing import Any

import gradio as gr
from gradio.exceptions import InvalidPathError

from backend.errors import StudioError

from .i18n import lang_of
from .uploads import not_uploaded

log = logging.getLogger(__name__)

_UNEXPECTED = (
    "Something went wrong while handling this request, and it was not completed. Please try "
    "again; if it keeps happening, tell an administrator the reference {ref}.",
    "处理此请求时出错，请求未完成。请重试；如果问题持续出现，请把参考编号 {ref} 告诉管理员。",
)


class UserError(gr.Error):
    """A message written for the user (already in their language).

    Gradio renders error texts as HTML, and ours may quote what the user typed, so the
    text is escaped. Nothing is printed: the message is expected, and unexpected failures
    were logged with their traceback by :func:`user_message`.
    """

    def __init__(self, message: str) -> None:
        super().__init__(html.escape(message, quote=False), print_exception=False)
        self.text = message


def user_message(exc: BaseException, lang: str) -> str:
    """What the user reads for ``exc``; unexpected exceptions are logged with a reference."""
    if isinstance(exc, UserError):
        return exc.text
    if isinstance(exc, StudioError):
        return exc.text(lang)
    if isinstance(exc, InvalidPathError):
        # Gradio's own guard refused a file the request named (not an upload, or blocked).
        log.warning("refused a file the request named: %s", exc)
        return not_uploaded().text(lang)
    ref = secrets.token_hex(4)
    log.error("event failed (reference %s): %s: %s", ref, type(exc).__name__, exc, exc_info=exc)
    en, zh = _UNEXPECTED
    return (zh if lang == "zh" else en).format(ref=ref)


def _request_of(request: Any) -> gr.Request | None:
    if isinstance(request, list):  # batched events carry one request per item
        return request[0] if request else None
    return request


class Blocks(gr.Blocks):
    """``gr.Blocks`` whose events report failures through :func:`user_message`."""

    async def process_api(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        try:
            return await super().process_api(*args, **kwargs)
        except UserError:
            raise
        except Exception as exc:  # noqa: BLE001 - this is where every failure is turned into words
            request = _request_of(kwargs.get("request", args[3] if len(args) > 3 else None))
            raise UserError(user_message(exc, lang_of(request))) from None
