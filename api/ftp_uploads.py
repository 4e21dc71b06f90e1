"""Diagnostics and log uploads over FTP, for chargers that upload only that way.

Many chargers take an ``ftp://`` location in GetDiagnostics (OCPP 1.6 section 5.9) or
GetLog and nothing else. This endpoint accepts exactly one kind of session: a charger
logging in with the one-time grant of :class:`~api.diagnostics.DiagnosticsUploads` as its
credentials (user = charger id, password = the grant's token, both carried in the location
``ftp://{charger_id}:{token}@{host}:{port}/``), storing files into an empty folder of its
own. Each file received lands where HTTP uploads land (the file store, folder
``diagnostics/{charger_id}``), with the same name rules and size limit, and spends the
grant; the HTTP listing and download serve it.

With a certificate and key the endpoint is FTPS (explicit, RFC 4217: the client asks
``AUTH TLS`` on the same port) and takes no session in clear, control or data, since the
login is the grant; locations are then ``ftps://``.

Why pyftpdlib in a thread: it is the kept, complete FTP server for Python (passive mode,
the commands chargers send, RFC 959 replies); it runs its own loop, so it gets a thread,
and hands each received file to the API's event loop, where the stores live.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import tempfile
import threading
import warnings
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, BinaryIO

from api.diagnostics import MAX_UPLOAD_BYTES, DiagnosticsUploads, safe_file_name
from chargetwin.files import FileTooLargeError
from chargetwin.topics import InvalidTopicError, validate_charger_id

log = logging.getLogger(__name__)

CALL_TIMEOUT = 30.0  # a store call from the FTP thread; the charger's command waits anyway
_CHUNK = 256 * 1024


def ftp_location(host: str, port: int, charger_id: str, token: str, *, tls: bool = False) -> str:
    """Where a charger uploads with this grant (ids and tokens need no URL escaping)."""
    return f"{'ftps' if tls else 'ftp'}://{charger_id}:{token}@{host}:{port}/"


class _LimitedFile:
    """A file being received, refused once it grows past the upload limit."""

    def __init__(self, file: BinaryIO, limit: int) -> None:
        self._file = file
        self._limit = limit
        self._size = 0
        self.name = file.name

    def write(self, data: bytes) -> int:
        self._size += len(data)
        if self._size > self._limit:
            raise OSError(f"diagnostics uploads are limited to {self._limit} bytes")
        return self._file.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._file, name)


class FtpUploads:
    """The FTP endpoint; :meth:`start` binds and serves in a thread, :meth:`stop` ends it."""

    def __init__(
        self,
        uploads: DiagnosticsUploads,
        host: str,
        port: int,
        *,
        max_bytes: int = MAX_UPLOAD_BYTES,
        passive_ports: range | None = None,
        tls: tuple[Path, Path] | None = None,
    ) -> None:
        self.uploads = uploads
        self.tls = tls  # (certificate chain, private key), PEM: FTPS only
        self.host = host
        self.port = port
        self.max_bytes = max_bytes
        self.passive_ports = passive_ports
        self._server: Any = None  # pyftpdlib's ThreadedFTPServer
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> int:
        """Listen (0 picks a free port) and return the bound port."""
        # Imported here: pyftpdlib loads the standard library's asyncore (deprecated, with a
        # warning), which a process without the FTP endpoint has no reason to load.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            from pyftpdlib.authorizers import AuthenticationFailed, DummyAuthorizer
            from pyftpdlib.filesystems import AbstractedFS
            from pyftpdlib.handlers import FTPHandler
            from pyftpdlib.servers import ThreadedFTPServer

            base: Any = FTPHandler
            if self.tls is not None:
                from pyftpdlib.handlers import TLS_FTPHandler

                base = TLS_FTPHandler

        self._loop = asyncio.get_running_loop()
        endpoint = self

        class Authorizer(DummyAuthorizer):  # type: ignore[misc]
            def validate_authentication(self, username: str, password: str, handler: Any) -> None:
                if not endpoint._granted(username, password):
                    raise AuthenticationFailed("login refused")
                handler.grant = (username, password)
                handler.home = tempfile.mkdtemp(prefix="chargetwin-ftp-")

            def has_user(self, username: str) -> bool:
                return True

            def get_home_dir(self, username: str) -> str:
                return tempfile.gettempdir()  # replaced by the session's own (Handler)

            def get_perms(self, username: str) -> str:
                return "elw"  # enter, list, store: nothing else

            def has_perm(self, username: str, perm: str, path: str | None = None) -> bool:
                return perm in "elw"

            def get_msg_login(self, username: str) -> str:
                return "upload your file"

            def get_msg_quit(self, username: str) -> str:
                return "bye"

            def impersonate_user(self, username: str, password: str) -> None:
                return None

            def terminate_impersonation(self, username: str) -> None:
                return None

        class Filesystem(AbstractedFS):  # type: ignore[misc]
            def open(self, filename: str, mode: str) -> Any:
                file = super().open(filename, mode)
                return _LimitedFile(file, endpoint.max_bytes) if "w" in mode else file

        class Handler(base):  # type: ignore[misc]
            authorizer = Authorizer()
            abstracted_fs = Filesystem
            banner = "ChargeTwin diagnostics upload"
            permit_foreign_addresses = False
            grant: tuple[str, str] | None = None
            home: str | None = None

            def handle_auth_success(self, home: str, password: str, msg_login: str) -> None:
                # The authorizer knows homes by user name; ours is per session, made at login.
                super().handle_auth_success(self.home or home, password, msg_login)

            def on_file_received(self, file: str) -> None:
                if self.grant is not None:
                    endpoint._received(self.grant, Path(file))

            def on_incomplete_file_received(self, file: str) -> None:
                with contextlib.suppress(OSError):
                    Path(file).unlink()

            def on_disconnect(self) -> None:
                if self.home:
                    shutil.rmtree(self.home, ignore_errors=True)

        if self.passive_ports is not None:
            Handler.passive_ports = self.passive_ports
        if self.tls is not None:
            from OpenSSL import SSL

            Handler.certfile, Handler.keyfile = (str(path) for path in self.tls)
            Handler.tls_control_required = Handler.tls_data_required = True
            # Built now, so a bad certificate stops the start instead of every session.
            Handler.get_ssl_context().set_min_proto_version(SSL.TLS1_2_VERSION)
        self._server = ThreadedFTPServer((self.host, self.port), Handler)
        self._server.max_cons = 256
        self._server.max_cons_per_ip = 16
        bound = int(self._server.socket.getsockname()[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"timeout": 0.5}, name="ftp-uploads"
        )
        self._thread.daemon = True
        self._thread.start()
        scheme = "ftps" if self.tls is not None else "ftp"
        log.info("FTP uploads listening on %s://%s:%d", scheme, self.host, bound)
        self.port = bound
        return bound

    def stop(self) -> None:
        if self._server is not None:
            self._server.close_all()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    # --- called from the FTP thread -----------------------------------------------------------
    def _call(self, coroutine: Any) -> Any:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(CALL_TIMEOUT)

    def _granted(self, charger_id: str, token: str) -> bool:
        try:
            validate_charger_id(charger_id)
        except InvalidTopicError:
            return False
        try:
            return bool(self._call(self.uploads.check(charger_id, token)))
        except Exception:
            log.exception("FTP login of %s not checked", charger_id)
            return False

    def _received(self, grant: tuple[str, str], file: Path) -> None:
        charger_id, token = grant
        try:
            stored = self._call(self._store(charger_id, token, file))
            if stored is not None:
                log.info("%s: diagnostics %s uploaded over FTP (%d bytes)", charger_id, *stored)
        except Exception:
            log.exception("%s: an FTP upload could not be stored", charger_id)
        finally:
            with contextlib.suppress(OSError):
                file.unlink()

    async def _store(self, charger_id: str, token: str, file: Path) -> tuple[str, int] | None:
        uploads = self.uploads
        folder = uploads.folder(charger_id)
        if not await uploads.check(charger_id, token):
            log.warning("%s: FTP upload after its grant was spent; not kept", charger_id)
            return None
        wanted = safe_file_name(file.name) or f"{charger_id}-diagnostics.log"
        try:
            async with uploads.files.upload(folder, max_bytes=self.max_bytes) as upload:
                async for chunk in _chunks(file):
                    await upload.write(chunk)
                stored = await upload.commit(wanted, exists="rename")
        except FileTooLargeError:
            log.warning("%s: FTP upload over %d bytes refused", charger_id, self.max_bytes)
            return None
        if not await uploads.spend(charger_id, token, stored.name):
            await uploads.files.delete(folder, stored.name)
            return None
        return stored.name, stored.size


async def _chunks(file: Path) -> AsyncIterator[bytes]:
    with file.open("rb") as source:
        while chunk := await asyncio.to_thread(source.read, _CHUNK):
            yield chunk
