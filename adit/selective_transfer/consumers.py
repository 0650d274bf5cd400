"""The live query of the selective transfer page over a WebSocket.

Client → server: JSON ``{"action": "query" | "transfer" | "cancel", <form fields>,
"selected_studies": [...]}``. Server → client: JSON envelopes whose ``html`` is a
server-rendered fragment: ``form`` (the form's fields, with errors), ``started`` (spinner with
Cancel), ``rows`` (table rows, in arrival order; the page sorts them in), ``done`` (summary or
result-limit hint), ``error``, ``canceled``, ``job`` (link to the created job). A query ends
with exactly one ``done`` or ``error`` (both stop the spinner), whatever goes wrong on the
server; a row's identifiers go into its links as encoded query parameters, so no PatientID
from a PACS can break the stream.

Everything is per connection: each message invalidates the running query (its operator is
aborted at the PACS and late results are dropped), and the user's permission and node access
are looked up again for every message, so a revoked right takes effect at once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.contrib.auth import get_user_model
from django.template.loader import render_to_string
from django.utils.datastructures import MultiValueDict

from adit.audit.services import record_query
from adit.core.dicom.errors import DicomError
from adit.core.dicom.operator import DicomOperator

from .forms import SelectiveTransferForm, remember_preferences, render_form_fields
from .services import (
    create_transfer_job,
    download_url,
    iter_study_rows,
    make_operator,
    query_error_message,
    result_limit,
    series_url,
)

logger = logging.getLogger(__name__)

CLOSE_UNAUTHENTICATED = 4401
PERMISSION = "selective_transfer.add_selectivetransferjob"


def _listify(data: dict) -> MultiValueDict:
    """JSON values as a form's QueryDict-like data (lists stay lists for getlist)."""
    result = MultiValueDict()
    for key, value in data.items():
        if isinstance(value, list):
            result.setlist(key, [str(v) for v in value])
        elif isinstance(value, bool):
            if value:
                result[key] = "on"
        elif value is not None:
            result[key] = str(value)
    return result


class SelectiveTransferConsumer(AsyncWebsocketConsumer):
    async def connect(self) -> None:
        self.message_id = 0
        self.operator: DicomOperator | None = None
        self.pump: asyncio.Task | None = None
        user = self.scope.get("user")
        await self.accept()
        if user is None or not user.is_authenticated:
            await self.close(code=CLOSE_UNAUTHENTICATED)

    async def disconnect(self, code) -> None:
        self._abort_running()

    # --- messages -------------------------------------------------------------------------------

    async def receive(self, text_data=None, bytes_data=None) -> None:
        self.message_id += 1
        self._abort_running()
        try:
            message = json.loads(text_data or "")
            if not isinstance(message, dict):
                raise ValueError
        except ValueError:
            await self._send("error", html=self._alert("danger", "The message was not understood."))
            return
        user = await database_sync_to_async(self._fresh_user)()
        if user is None:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        if not await database_sync_to_async(user.has_perm)(PERMISSION):
            await self._send(
                "error",
                html=self._alert("danger", "Your active group may not use selective transfer."),
            )
            return
        action = message.get("action")
        if action == "cancel":
            await self._send("canceled", html=self._alert("secondary", "The query was canceled."))
        elif action == "query":
            await self._query(user, message)
        elif action == "transfer":
            await self._transfer(user, message)
        else:
            await self._send("error", html=self._alert("danger", f"Unknown action {action!r}."))

    def _fresh_user(self):
        """The user as stored now (permissions and active group may have changed)."""
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            return None
        return get_user_model().objects.filter(pk=user.pk, is_active=True).first()

    async def _query(self, user, message: dict) -> None:
        form, form_html, source = await database_sync_to_async(self._validated_form)(
            user, message, "query"
        )
        await self._send("form", html=form_html)
        if source is None:
            return
        can_download = await database_sync_to_async(user.has_perm)(
            "selective_transfer.can_download_study"
        )
        query = form.query_dataset()
        await database_sync_to_async(record_query)(
            query, user=user, request=self.scope, source=source
        )
        options = {
            name: form.cleaned_data.get(name, "")
            for name in ("pseudonym", "trial_protocol_id", "trial_protocol_name")
        }
        operator = make_operator(source)
        self.operator = operator
        message_id = self.message_id
        queue: asyncio.Queue = asyncio.Queue()
        loop = asyncio.get_running_loop()
        limit = result_limit()
        await self._send(
            "started",
            html=render_to_string(
                "selective_transfer/_query_running.html", {"server": source.name}
            ),
        )

        def run() -> None:
            # Runs in its own thread: the PACS may take long; the event loop stays free.
            try:
                for row in iter_study_rows(operator, query, limit):
                    loop.call_soon_threadsafe(queue.put_nowait, ("row", row))
                loop.call_soon_threadsafe(queue.put_nowait, ("end", None))
            except Exception as error:  # noqa: BLE001 — reported to the user
                loop.call_soon_threadsafe(queue.put_nowait, ("error", error))

        threading.Thread(target=run, name="selective-transfer-query", daemon=True).start()
        self.pump = asyncio.create_task(
            self._pump(message_id, operator, queue, source.pk, options, limit, can_download)
        )

    async def _pump(
        self, message_id, operator, queue, server_id, options, limit, can_download
    ) -> None:
        """Sends results as they arrive and always ends the query with ``done`` or ``error``.

        Whatever fails here (a value from the PACS that a page cannot show, a bug) is logged
        and reported to the client as an error: the query never ends silently with the
        spinner still turning.
        """
        try:
            await self._pump_rows(
                message_id, operator, queue, server_id, options, limit, can_download
            )
        except Exception as error:  # noqa: BLE001 — reported to the user, logged for us
            operator.abort()
            if message_id != self.message_id:
                return
            logger.error("Selective transfer live query failed", exc_info=error)
            if self.operator is operator:
                self.operator = None
            await self._send("error", html=self._alert("danger", query_error_message(error)))

    async def _pump_rows(
        self, message_id, operator, queue, server_id, options, limit, can_download
    ) -> None:
        """Sends results as they arrive; rows that came together go in one message."""
        count = 0
        while True:
            items = [await queue.get()]
            while not queue.empty():
                items.append(queue.get_nowait())
            if message_id != self.message_id:
                return
            rows, final = [], None
            for kind, value in items:
                if kind == "row":
                    if count < limit:
                        count += 1
                        if can_download:
                            value.download_url = download_url(server_id, value, options)
                        value.series_url = series_url(server_id, value)
                        rows.append(value)
                    else:
                        final = ("limit", None)
                        break
                else:
                    final = (kind, value)
                    break
            if rows:
                await self._send(
                    "rows",
                    html=render_to_string(
                        "selective_transfer/_result_rows.html",
                        {"rows": rows, "can_download": can_download},
                    ),
                    count=count,
                )
            if final is None:
                continue
            kind, value = final
            if kind == "error" and isinstance(value, BaseException):
                if not isinstance(value, DicomError | ValueError):
                    logger.error("Selective transfer query failed", exc_info=value)
                await self._send("error", html=self._alert("danger", query_error_message(value)))
            else:
                more = kind == "limit"
                if more:
                    operator.abort()  # enough results: stop the PACS sending more
                await self._send(
                    "done",
                    html=render_to_string(
                        "selective_transfer/_query_done.html",
                        {"count": count, "more_than_limit": more, "limit": limit},
                    ),
                    count=count,
                )
            if self.operator is operator:
                self.operator = None
            return

    async def _transfer(self, user, message: dict) -> None:
        form_html, job_html, job_url = await database_sync_to_async(self._create_job)(user, message)
        await self._send("form", html=form_html)
        if job_html:
            await self._send("job", html=job_html, url=job_url)

    def _create_job(self, user, message: dict) -> tuple[str, str, str]:
        form = SelectiveTransferForm(_listify(message), user=user, action="transfer")
        job_html = job_url = ""
        if form.is_valid():
            remember_preferences(user, form.cleaned_data)
            studies = form.selected_studies(
                _selected_keys(message), _selected_keys(message, "selected_series")
            )
            if studies:
                job = create_transfer_job(form, studies)
                job_html = render_to_string("selective_transfer/_job_created.html", {"job": job})
                job_url = job.get_absolute_url()
        return render_form_fields(form), job_html, job_url

    def _validated_form(self, user, message: dict, action: str):
        """The bound form, its rendered fields and the source server when valid (ORM: call
        in a sync thread)."""
        form = SelectiveTransferForm(_listify(message), user=user, action=action)
        source = None
        if form.is_valid():
            remember_preferences(user, form.cleaned_data)
            source = form.cleaned_data["source"].concrete
        return form, render_form_fields(form), source

    # --- helpers --------------------------------------------------------------------------------

    def _abort_running(self) -> None:
        operator, self.operator = self.operator, None
        if operator is not None:
            operator.abort()
        pump, self.pump = self.pump, None
        if pump is not None and not pump.done():
            pump.cancel()

    async def _send(self, kind: str, **payload: Any) -> None:
        await self.send(text_data=json.dumps({"type": kind, **payload}))

    @staticmethod
    def _alert(level: str, text: str) -> str:
        return render_to_string("selective_transfer/_alert.html", {"level": level, "text": text})


def _selected_keys(message: dict, name: str = "selected_studies") -> list[str]:
    selected = message.get(name, [])
    if isinstance(selected, str):
        selected = [selected]
    if not isinstance(selected, list):
        return []
    return [str(key) for key in selected]
