"""Charger credentials: rotating a charger's HTTP Basic password, and how it went.

``POST /chargers/{id}/credentials/rotate`` (admin) makes a new random password, keeps it
in the registry (never in the shadow, which viewers read, and never in an answer), and
asks the bridge holding the charger to set it there (ChangeConfiguration AuthorizationKey
for OCPP 1.6, SetVariables SecurityCtrlr/BasicAuthPassword for 2.0.1; see
:mod:`bridge.credentials`); a charger that is offline gets it at its next boot. The
old password keeps working until the charger has connected with the new one.
"""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Depends, status

from api.auth import Admin, Viewer
from api.backends import Backend, get_backend
from api.models import RotationOut
from api.problems import Problem, problem_responses
from api.routes.chargers import find_charger
from chargetwin.audit import Outcome
from twin.registry import RotationError, RotationInProgressError

log = logging.getLogger(__name__)

router = APIRouter(prefix="/chargers/{charger_id}/credentials", tags=["chargers"])

BackendDep = Annotated[Backend, Depends(get_backend)]
ROTATE_ACTION = "credentials.rotate"
# The request bridges recognise on a charger's command topic (bridge.credentials.COMMAND).
ROTATE_COMMAND = "rotate-credentials"


@router.post(
    "/rotate",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=RotationOut,
    summary="Rotate a charger's password",
    description="Admin. Makes a new random password and has the bridge set it on the charger "
    "(OCPP 1.6 ChangeConfiguration AuthorizationKey, OCPP 2.0.1 SetVariables "
    "SecurityCtrlr/BasicAuthPassword) now, or at its next boot when offline. "
    "Both passwords work until the charger connects with the new one; the rotation is then "
    "`done`. A charger that refuses it leaves the rotation `failed` and its old password "
    "in place. The password is never shown. 409 while the last rotation is still `pending` "
    "or `accepted`, or for a charger that authenticates by certificate.",
    responses=problem_responses(401, 403, 404, 409),
)
async def rotate_credentials(charger_id: str, backend: BackendDep, who: Admin) -> RotationOut:
    await find_charger(backend, charger_id)
    try:
        rotation = await backend.registry.start_rotation(charger_id)
    except RotationInProgressError as exc:
        raise Problem(409, str(exc), kind="rotation-in-progress") from exc
    except RotationError as exc:
        raise Problem(409, str(exc), kind="rotation-impossible") from exc
    await backend.audit.record(
        actor=who.name,
        actor_id=who.token_id,
        role=who.role.value,
        charger_id=charger_id,
        action=ROTATE_ACTION,
        patch={"rotationId": rotation.rotation_id, "status": rotation.status.value},
        outcome=Outcome.ACCEPTED,
        status=status.HTTP_202_ACCEPTED,
    )
    if backend.topics is not None:
        # No secret in it: the bridge reads the new password from the registry.
        backend.mqtt.publish(
            backend.topics.command(charger_id),
            {"name": ROTATE_COMMAND, "clientToken": rotation.rotation_id},
        )
    log.info("%s: password rotation %s requested", charger_id, rotation.rotation_id)
    return RotationOut.model_validate(rotation.as_dict())


@router.get(
    "",
    response_model=RotationOut,
    summary="The latest password rotation of a charger",
    description="Viewer. Status only, never a password; 404 when none was ever asked.",
    responses=problem_responses(401, 403, 404),
)
async def get_credentials(charger_id: str, backend: BackendDep, _: Viewer) -> RotationOut:
    await find_charger(backend, charger_id)
    rotation = await backend.registry.rotation(charger_id)
    if rotation is None:
        raise Problem(
            404, f"charger {charger_id!r} has no password rotation", kind="rotation-not-found"
        )
    return RotationOut.model_validate(rotation.as_dict())
