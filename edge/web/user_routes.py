"""Managing users (an admin's): list, add with their own PIN (the token shown once), change a
role, a PIN, whether they may log in, or issue a new token. Every change is audited; a change
ends the user's sessions opened before it (``edge.web.users``)."""

from __future__ import annotations

from typing import Any, cast

from flask import Blueprint, current_app, jsonify, request

from edge.device.service import Service
from edge.web.common import Refused, client
from edge.web.users import UserError, Users, check_name

bp = Blueprint("users", __name__)


def _service() -> Service:
    return cast(Service, current_app.extensions["blastscope.service"])


def _users() -> Users:
    return cast(Users, current_app.extensions["blastscope.users"])


def _user_body() -> dict[str, Any]:
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        raise Refused(400, 'send JSON {"name": ..., "role": "technician|reviewer|admin", "pin": "6 to 12 digits"}')
    return data

@bp.get("/api/users")
def list_users():
    return jsonify({"users": [{"name": u.name, "role": u.role, "active": u.active} for u in _users().all()]})

@bp.post("/api/users")
def add_user():
    """A new user with their own PIN; the answer carries their API token, shown only here."""
    data = _user_body()
    try:
        token = _users().add(data.get("name"), data.get("role"), data.get("pin"))  # type: ignore[arg-type]
    except UserError as exc:
        raise Refused(400, str(exc)) from None
    name = check_name(data["name"])
    _service().store.audit(client(), "user.add", after={"name": name, "role": data["role"]})
    return jsonify({"name": name, "role": data["role"], "active": True, "token": token}), 201

@bp.post("/api/users/<string(maxlength=40):name>")
def change_user(name: str):
    """Change a role, a PIN, whether the user may log in, or issue a new token (the old one
    stops working). The user's sessions opened before the change end."""
    data = _user_body()
    active = data.get("active")
    if active is not None and not isinstance(active, bool):
        raise Refused(400, "active is true or false")
    before = _users().get(name)
    if before is None:
        raise Refused(404, f"no user named {name!r}")
    try:
        token = _users().change(name, role=data.get("role"), pin=data.get("pin"), active=active,
                             new_token=data.get("new_token") is True)
    except UserError as exc:
        raise Refused(400, str(exc)) from None
    after = _users().get(name)
    assert after is not None
    _service().store.audit(client(), "user.change",
                        before={"name": before.name, "role": before.role, "active": before.active},
                        after={"name": after.name, "role": after.role, "active": after.active,
                               "pin_changed": "pin" in data, "new_token": token is not None})
    return jsonify({"name": after.name, "role": after.role, "active": after.active,
                    **({"token": token} if token else {})})
