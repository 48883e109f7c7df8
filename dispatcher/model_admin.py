"""Model administration through the uploader: publish, asynchronous uploads, rollback, delete.

The dispatcher forwards model authors' calls to the uploader (`--uploader-url`) with the admin
key and acts on what it answers (docs/architecture.md §4.1):

- the uploader is the source of truth for what is published: every `--catalogue-sync-s`
  (first at start) its `GET /models` is reconciled with the catalogue (`catalogue.reconcile`),
  so a publish, rollback or delete made through another dispatcher reaches this one within a
  period: a new version is published and `Reload` sent to the holders this dispatcher knows
  (the worker ignores a Reload of the version it already serves, so every dispatcher may send
  it); a model gone from the uploader has its queued tasks failed 410 and is forgotten (the
  deleting dispatcher already unloaded it: no `Unload` again). An uploader that does not
  answer changes nothing (one warning per outage). With the sync off (0) the list is read
  once at start (retried a few times: the uploader may start later);
- a publish (an upload's or a rollback's success answer) goes into the catalogue at once, and
  every worker holding the model is told to load the new version (`Reload`);
- an asynchronous upload (`"async": true`, answered 202) is *watched*: a background task
  long-polls the uploader's `GET /uploads/{id}` until it ends, so its publish takes effect
  whether or not anyone reads the status; `GET /uploads/{id}` is proxied as well;
- `DELETE /models/{name}` runs the delete in order, so that nothing is left half-done without
  saying so: the uploader is checked first (unreachable: 503 and nothing changed); the model
  is marked deleting (new tasks 410 at once, queued ones failed 410); every worker holding it
  is sent `Unload` (it finishes the tasks running on it first) and the delete waits, bounded,
  until none holds it; the uploader removes its folder; the catalogue forgets it (404 from
  then on). When the uploader fails at that step the model is served again and the 503 says
  where it was unloaded and that its files are still there.

I/O lives here (httpx, timers); the rules are the catalogue's (`dispatcher.catalogue`) and the
core's (`Core.reload`, `Core.unload`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any
from urllib.parse import quote

import httpx
from starlette.responses import JSONResponse, Response

from dispatcher.catalogue import (
    ForgetModel,
    PublishModel,
    SyncAction,
    listed_models,
    models_published,
    published_hash,
)
from dispatcher.config import Config
from dispatcher.errors import (
    ModelDeleted,
    ModelNotFound,
    UploaderNotConfigured,
    UploaderUnavailable,
    UploaderUnreachable,
)
from dispatcher.runtime import Dispatcher

log = logging.getLogger("dispatcher.models")

#: Longest wait for the workers holding a deleted model to drain and unload it (seconds).
UNLOAD_WAIT_S = 120.0
#: How often the delete looks whether the holders have unloaded (seconds).
UNLOAD_POLL_S = 0.02
#: One long poll of a watched asynchronous upload (the uploader allows up to 60 s).
WATCH_POLL_S = 30.0
#: Longest an asynchronous upload is watched (seconds); the status stays readable after.
WATCH_LIMIT_S = 6 * 3600.0
#: Most asynchronous uploads watched at once (each is one pending HTTP request).
MAX_WATCHES = 64
#: Longest wait for the uploader to remove a model's folder (seconds).
REMOVE_TIMEOUT_S = 60.0
#: Tries, and the pause between them, to read the uploader's models at start.
LEARN_TRIES = 5
LEARN_PAUSE_S = 3.0
#: Longest wait for one read of the uploader's models by the catalogue sync (seconds).
SYNC_TIMEOUT_S = 10.0
#: A conversion may take minutes: the timeout of a forwarded upload.
UPLOAD_TIMEOUT_S = 600.0


class ModelAdmin:
    """The dispatcher's side of the model lifecycle; one per app."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.unload_wait_s = UNLOAD_WAIT_S
        self.remove_timeout_s = REMOVE_TIMEOUT_S
        self._watches: dict[str, asyncio.Task[None]] = {}
        self._learning: asyncio.Task[None] | None = None
        #: Labels published or deleted through this dispatcher since the sync's current read
        #: of the uploader's list began: that list may predate the change, so the round
        #: leaves them alone.
        self._touched: set[str] = set()
        #: Whether the last sync round found the uploader unreadable (one warning per outage).
        self._uploader_down = False

    # ---- the uploader -------------------------------------------------------------------

    def base_url(self) -> str:
        if not self.config.uploader_url:
            raise UploaderNotConfigured(
                "no uploader configured (--uploader-url / DISPATCHER_UPLOADER_URL)",
                retry_after_s=self.config.retry_after_s,
            )
        return self.config.uploader_url.rstrip("/")

    async def call(
        self,
        method: str,
        path: str,
        raw: bytes | None = None,
        params: dict[str, str] | None = None,
        timeout_s: float = UPLOAD_TIMEOUT_S,
    ) -> httpx.Response:
        """One request to the uploader with the admin key; UploaderUnreachable when it does
        not answer."""
        url = self.base_url() + path
        # The caller passed the dispatcher's admin check; the uploader checks the same key.
        headers = {"Content-Type": "application/json"}
        if self.config.admin_key:
            headers["Authorization"] = f"Bearer {self.config.admin_key}"
        try:
            async with httpx.AsyncClient(timeout=httpx.Timeout(timeout_s, connect=5.0)) as client:
                return await client.request(
                    method, url, content=raw, headers=headers, params=params
                )
        except httpx.HTTPError as exc:
            raise UploaderUnreachable(f"uploader at {self.config.uploader_url}: {exc!r}") from exc

    async def forward(self, d: Dispatcher, path: str, raw: bytes) -> Response:
        """POST `raw` to the uploader's `path` and pass its answer through; a success is
        published, a 202 (asynchronous upload) watched."""
        answer = await self.call("POST", path, raw)
        if answer.status_code == 200:
            self.published(d, answer.content)
        elif answer.status_code == 202:
            upload_id = _field(answer.content, "upload_id")
            if upload_id:
                self.watch(d, upload_id)
        return _passed_through(answer)

    def published(self, d: Dispatcher, answer: bytes) -> None:
        """A success answer of the uploader: the version goes into the catalogue and, when it
        is new, every worker holding the model is told to load it (`Reload`)."""
        published = models_published(answer)
        if published is None:
            return
        name, version = published
        self._touched.add(name)
        if d.catalogue.publish(name, version, published_hash(answer)):
            told = d.core.reload(name, version)
            log.info("model %s version %s published; reload sent to %s", name, version, told)

    # ---- asynchronous uploads -----------------------------------------------------------

    async def upload_status(self, d: Dispatcher, upload_id: str, wait_s: str | None) -> Response:
        """`GET /uploads/{id}` proxied; a success read here is published too (once)."""
        params = {"wait_s": wait_s} if wait_s else None
        answer = await self.call("GET", "/uploads/" + quote(upload_id, safe=""), params=params)
        if answer.status_code == 200:
            self._job_result(d, answer.content)
        return _passed_through(answer)

    def watch(self, d: Dispatcher, upload_id: str) -> None:
        """Follow an asynchronous upload until it ends (at most MAX_WATCHES at once: past
        that, its publish takes effect when its status is read)."""
        if upload_id in self._watches or len(self._watches) >= MAX_WATCHES:
            return
        task = asyncio.create_task(self._watch(d, upload_id), name=f"watch-upload-{upload_id}")
        self._watches[upload_id] = task
        task.add_done_callback(lambda _: self._watches.pop(upload_id, None))

    async def _watch(self, d: Dispatcher, upload_id: str) -> None:
        path = "/uploads/" + quote(upload_id, safe="")
        loop = asyncio.get_running_loop()
        give_up = loop.time() + WATCH_LIMIT_S
        while loop.time() < give_up:
            try:
                answer = await self.call(
                    "GET", path, params={"wait_s": f"{WATCH_POLL_S:g}"}, timeout_s=WATCH_POLL_S + 30
                )
            except UploaderUnreachable as exc:
                log.warning("upload %s: status unreadable (%s); trying again", upload_id, exc)
                await asyncio.sleep(WATCH_POLL_S / 10)
                continue
            if answer.status_code != 200:  # forgotten by the uploader (restart, TTL)
                log.warning(
                    "upload %s: status %d; no longer watched", upload_id, answer.status_code
                )
                return
            if self._job_result(d, answer.content):
                return

    def _job_result(self, d: Dispatcher, status: bytes) -> bool:
        """Act on an upload status; whether the upload has ended."""
        try:
            body = json.loads(status)
        except ValueError:
            return False
        if not isinstance(body, dict) or body.get("state") not in ("success", "failed"):
            return False
        result = body.get("result")
        if body["state"] == "success" and isinstance(result, dict):
            self.published(d, json.dumps(result).encode())
        return True

    # ---- start and stop -----------------------------------------------------------------

    def start(self, d: Dispatcher) -> None:
        """Follow the uploader's published models in the background (when one is set):
        periodically with `--catalogue-sync-s`, else once."""
        if not self.config.uploader_url:
            return
        if self.config.catalogue_sync_s > 0:
            self._learning = asyncio.create_task(self._sync_loop(d), name="catalogue-sync")
        else:
            self._learning = asyncio.create_task(self._learn(d), name="learn-published-models")

    async def _sync_loop(self, d: Dispatcher) -> None:
        while True:
            try:
                await self.sync(d)
            except Exception:  # a bug here must not end the sync for good
                log.exception("catalogue sync failed")
            await asyncio.sleep(self.config.catalogue_sync_s)

    async def sync(self, d: Dispatcher) -> list[SyncAction] | None:
        """One round of the catalogue sync: read the uploader's models and apply what they
        change; the actions applied, None when the uploader could not be read."""
        self._touched.clear()
        try:
            answer = await self.call("GET", "/models", timeout_s=SYNC_TIMEOUT_S)
        except UploaderUnreachable as exc:
            self._uploader_unreadable(exc.detail)
            return None
        listed = listed_models(answer.content) if answer.status_code == 200 else None
        if listed is None:
            self._uploader_unreadable(f"GET /models answered {answer.status_code}")
            return None
        if self._uploader_down:
            self._uploader_down = False
            log.info("catalogue sync: the uploader's models are readable again")
        actions = d.catalogue.sync_actions(listed, self._touched)
        for action in actions:
            if isinstance(action, PublishModel):
                self._publish_learned(d, action)
            elif isinstance(action, ForgetModel):
                self._forget_learned(d, action.label)
        return actions

    def _uploader_unreadable(self, why: str) -> None:
        # Nothing changes while the uploader is away: the catalogue keeps serving what it has.
        if not self._uploader_down:
            self._uploader_down = True
            log.warning("catalogue sync: the uploader's models are unreadable (%s)", why)

    def _publish_learned(self, d: Dispatcher, action: PublishModel) -> None:
        """Published through another dispatcher: known here, and the holders this dispatcher
        knows told to load the version (a worker already on it ignores the Reload)."""
        if d.catalogue.publish(action.label, action.version, action.content_hash):
            told = d.core.reload(action.label, action.version)
            log.info(
                "model %s version %s learned from the uploader; reload sent to %s",
                action.label,
                action.version,
                told,
            )

    def _forget_learned(self, d: Dispatcher, label: str) -> None:
        """Deleted through another dispatcher, which unloaded it everywhere: its queued tasks
        here are failed 410 and it is forgotten (404 from then on)."""
        failed = self._fail_queued(d, label)
        d.catalogue.finish_delete(label)
        log.info(
            "model %s is gone from the uploader: forgotten, %d queued tasks failed", label, failed
        )

    async def _learn(self, d: Dispatcher) -> None:
        for attempt in range(LEARN_TRIES):
            try:
                answer = await self.call("GET", "/models", timeout_s=10.0)
            except UploaderUnreachable as exc:
                log.info("uploader's models unreadable (try %d): %s", attempt + 1, exc.detail)
                await asyncio.sleep(LEARN_PAUSE_S)
                continue
            if answer.status_code == 200:
                for name, version, digest in listed_models(answer.content) or []:
                    # A publish or delete seen since is newer than this list.
                    seen = d.catalogue.published.keys() | d.catalogue.deleted.keys()
                    if name not in seen and name not in d.catalogue.deleting:
                        d.catalogue.publish(name, version, digest)
            return

    async def close(self) -> None:
        """Stop watching, learning and syncing (shutdown)."""
        tasks = list(self._watches.values()) + ([self._learning] if self._learning else [])
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # ---- delete -------------------------------------------------------------------------

    async def delete(self, d: Dispatcher, name: str) -> Response:
        """`DELETE /models/{name}`: see the module doc for the order and what a failure
        leaves."""
        catalogue = d.catalogue
        if not catalogue.named(name) and name not in catalogue.deleting:
            raise ModelNotFound(catalogue.not_found_detail(name))
        base = self.base_url()
        try:
            await self.call("GET", "/health", timeout_s=5.0)
        except UploaderUnreachable as exc:
            raise UploaderUnavailable(
                f"the uploader at {base} does not answer ({exc.detail}); nothing was changed:"
                f" {name!r} is still served",
                retry_after_s=self.config.retry_after_s,
            ) from exc
        catalogue.begin_delete(name)
        self._touched.add(name)
        try:
            answer, told, still, failed = await self._unload_and_remove(d, name)
        except BaseException:
            # Anything but a removal (the uploader down, a refusal, a cancelled request):
            # the model is served again, never left refusing tasks.
            catalogue.abort_delete(name)
            raise
        if answer.status_code not in (200, 404):
            # Refused (an upload of it is running: 409): served again, the refusal passed on.
            catalogue.abort_delete(name)
            return _passed_through(answer)
        removed = answer.status_code == 200
        catalogue.finish_delete(name)
        self._touched.add(name)  # a sync round reading the list meanwhile may still see it
        versions = _field(answer.content, "versions") if removed else []
        log.info("model %s deleted: unloaded from %s, files removed %s", name, told, removed)
        return JSONResponse(
            {
                "status": "success",
                "message": f"{name} deleted"
                + ("" if removed else " (the uploader's repository had no files of it)"),
                "model_name": name,
                "unloaded_from": told,
                "still_loaded_on": still,
                "queued_tasks_failed": failed,
                "files_removed": removed,
                "versions_removed": versions if isinstance(versions, list) else [],
            }
        )

    async def _unload_and_remove(
        self, d: Dispatcher, name: str
    ) -> tuple[httpx.Response, list[str], list[str], int]:
        """Fail the queued tasks, unload everywhere (bounded wait), ask the uploader to
        remove the folder: (its answer, workers told, workers still holding it, tasks failed)."""
        failed = self._fail_queued(d, name)
        told = d.core.unload(name)
        still = await self._wait_unloaded(d, name)
        try:
            answer = await self.call(
                "DELETE", "/models/" + quote(name, safe=""), timeout_s=self.remove_timeout_s
            )
        except UploaderUnreachable as exc:
            raise UploaderUnavailable(
                f"the uploader did not answer the delete ({exc.detail}): {name!r} was unloaded"
                f" from {told or 'no worker'} but its files are still in the repository; it is"
                " served again (loaded by the next task). Send the DELETE again.",
                retry_after_s=self.config.retry_after_s,
            ) from exc
        return answer, told, still, failed

    def _fail_queued(self, d: Dispatcher, name: str) -> int:
        """Answer the model's queued tasks 410 (they would find it gone); how many."""
        failed = 0
        for _ in range(d.core.queue.count(name)):
            task = d.core.queue.oldest_of(name)
            if task is None:
                break
            d.core.cancel(task.task_id, ModelDeleted(f"model {name!r} was deleted"))
            failed += 1
        return failed

    async def _wait_unloaded(self, d: Dispatcher, name: str) -> list[str]:
        """Wait until no worker holds `name` (their LabelsChanged say so), at most
        `unload_wait_s`; the workers still holding it then."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.unload_wait_s
        # The registry changes on worker frames, which have no hook here: look every 20 ms.
        while d.core.registry.holders(name) and loop.time() < deadline:
            await asyncio.sleep(UNLOAD_POLL_S)
        still = sorted(d.core.registry.holders(name))
        if still:
            log.warning("model %s: still held by %s after %.0f s", name, still, self.unload_wait_s)
        return still


def _passed_through(answer: httpx.Response) -> Response:
    """The uploader's answer as the dispatcher's (status, body, type, Location)."""
    headers = {"Location": answer.headers["location"]} if "location" in answer.headers else None
    return Response(
        answer.content,
        status_code=answer.status_code,
        media_type=answer.headers.get("content-type", "application/json"),
        headers=headers,
    )


def _field(raw: bytes, key: str) -> Any:
    """`key` of a JSON object body, None when absent or not JSON."""
    with contextlib.suppress(ValueError):
        body = json.loads(raw)
        if isinstance(body, dict):
            return body.get(key)
    return None
