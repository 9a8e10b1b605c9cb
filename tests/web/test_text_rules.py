"""One text rule for notes, user names and file names (issue 35 item 8): a lone surrogate in a
user name gave 500, names took U+0085 and U+202E, file names kept ESC, BEL, NUL and U+2028 and
were stored uncapped (5,000 characters)."""

from __future__ import annotations

import io

import pytest

from conftest import sample_paths


@pytest.mark.parametrize("name", ["Ana\\ud800", "Ana\\u0085", "Ana\\u202eevil", "Ana\\u2028B", "Ana\\u001b"])
def test_a_user_name_with_a_forbidden_character_is_refused_with_the_reason(client, bearer, name):
    body = '{"name": "%s", "role": "technician", "pin": "97531864"}' % name  # JSON escapes, as a phone sends
    r = client.post("/api/users", data=body, headers={**bearer, "Content-Type": "application/json"})
    assert r.status_code == 400, r.get_data(as_text=True)
    assert "user name is 1 to 40 characters" in r.get_json()["error"]


def test_a_note_refuses_what_a_name_refuses(client, bearer):
    r = client.post("/api/cases", data='{"code": "", "note": "ward\\u202e3"}',
                    headers={**bearer, "Content-Type": "application/json"})
    assert r.status_code == 400 and "text-direction control" in r.get_json()["error"]


def test_an_upload_file_name_is_cleaned_and_capped(client, bearer):
    path = sample_paths()[0]
    name = "field\x1b\x07\x00\u2028-" + "x" * 5000 + ".jpg"
    r = client.post("/api/classify", headers=bearer, data={"image": (io.BytesIO(path.read_bytes()), name)})
    assert r.status_code == 200, r.get_json()
    source = r.get_json()["source"]
    assert source.startswith("upload:field-xxx") and len(source) == len("upload:") + 100
    assert not any(ord(ch) < 32 or ch == "\u2028" for ch in source)
