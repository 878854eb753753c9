"""Signed indicator packs: keys, detached signatures, the trust store, TLP clearances and the
integrity check of the packs saved in a model directory."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import logging
import os
import shutil
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization

from riskengine.cli import main
from riskengine.indicators import (
    PackError,
    PackSignatureError,
    SigningKeyError,
    TrustStore,
    TrustStoreError,
    default_pack_path,
    default_packs,
    generate_keypair,
    load_verified_pack,
    load_verified_packs,
    packs_for_clearance,
    parse_pack,
    sign_pack_file,
    verify_pack_file,
)
from riskengine.indicators.signing import (
    SIGNING_DOMAIN,
    load_model_packs,
    load_private_key,
    read_signature,
    signature_path,
)

LOGGER = "riskengine.indicators.signing"


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path, monkeypatch):
    """Never read the user's trust store or development switches."""
    monkeypatch.setenv("RISKENGINE_TRUST_DIR", str(tmp_path / "default-trust"))
    monkeypatch.delenv("RISKENGINE_ALLOW_UNSIGNED_PACKS", raising=False)
    monkeypatch.delenv("RISKENGINE_KEY_PASSPHRASE", raising=False)


def tiny_pack(pack_id: str = "nl-customs-cocaine", tlp: str = "GREEN") -> dict:
    return {
        "metadata": {"id": pack_id, "version": "1.0.0",
                     "issuer": {"agency": "Douane Rotterdam", "country": "NL"},
                     "created": "2025-01-15", "tlp": tlp},
        "indicators": [{"id": "seal_mismatch_at_gate", "title": "Seal differs at the gate",
                        "rationale": "The seal at the gate is not the manifest seal.",
                        "condition": {"field": "seal_mismatch", "eq": True},
                        "severity": "critical"}],
    }


def write_pack(path: Path, pack_id: str = "nl-customs-cocaine", tlp: str = "GREEN") -> Path:
    path.write_text(yaml.safe_dump(tiny_pack(pack_id, tlp), sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture
def signed(tmp_path):
    """A pack signed by the NL key, and a trust store that trusts that key."""
    keys = generate_keypair(tmp_path / "keys", "nl-douane-2025")
    pack = write_pack(tmp_path / "nl.yaml")
    sign_pack_file(pack, keys.private_key, signer="Douane Rotterdam")
    store = TrustStore(tmp_path / "trust")
    store.add(keys.public_key, partner="Douane NL", country="NL")
    return pack, keys, store


def reason(exc_info) -> str:
    return exc_info.value.reason


# --------------------------------------------------------------------------------------------
# Round trip
# --------------------------------------------------------------------------------------------

def test_api_round_trip(signed):
    pack, keys, store = signed
    raw_pub = load_private_key(keys.private_key).public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert keys.key_id == hashlib.sha256(raw_pub).hexdigest()[:16]

    result = verify_pack_file(pack, store)
    assert (result.signer, result.partner, result.country) == ("Douane Rotterdam", "Douane NL", "NL")
    assert result.key_id == keys.key_id and result.pack_id == "nl-customs-cocaine"
    assert result.sha256 == hashlib.sha256(pack.read_bytes()).hexdigest()
    assert result.signed_at.tzinfo is not None

    loaded = load_verified_pack(pack, store)
    assert loaded.id == "nl-customs-cocaine" and loaded.sha256 == result.sha256
    assert [p.id for p in load_verified_packs([pack.parent / "nl.yaml"], store.path)] == [loaded.id]

    sig = json.loads(signature_path(pack).read_text())
    assert sig["algorithm"] == "ed25519" and sig["key_id"] == keys.key_id
    assert sig["sha256"] == result.sha256 and sig["signer"] == "Douane Rotterdam"
    # The signature covers the domain prefix and every other field of the .sig file.
    fields = {k: v for k, v in sig.items() if k != "signature"}
    message = SIGNING_DOMAIN + json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()
    load_private_key(keys.private_key).public_key().verify(base64.b64decode(sig["signature"]), message)


def test_cli_round_trip(tmp_path):
    runner = CliRunner()
    trust = str(tmp_path / "trust")
    res = runner.invoke(main, ["indicators", "keygen", "--out", str(tmp_path / "k"), "--name", "nl", "--json"])
    assert res.exit_code == 0, res.output
    kg = json.loads(res.stdout)
    pack = write_pack(tmp_path / "nl.yaml")
    res = runner.invoke(main, ["indicators", "sign", str(pack), "--key", kg["private_key"],
                               "--signer", "Douane Rotterdam"])
    assert res.exit_code == 0, res.output
    assert signature_path(pack).exists() and kg["key_id"] in res.output

    res = runner.invoke(main, ["indicators", "verify", str(pack), "--trust", trust])
    assert res.exit_code == 1 and f"PackSignatureError: untrusted key {kg['key_id']}" in res.output
    assert "trust add" in " ".join(res.output.split())

    res = runner.invoke(main, ["indicators", "trust", "add", kg["public_key"], "--name", "Douane NL",
                               "--country", "nl", "--expires", "2999-12-31", "--packs", "nl-",
                               "--trust", trust])
    assert res.exit_code == 0, res.output
    res = runner.invoke(main, ["indicators", "trust", "list", "--trust", trust, "--json"])
    (key,) = json.loads(res.stdout)["keys"]
    assert (key["key_id"], key["partner"], key["country"], key["expires"], key["packs"]) == \
        (kg["key_id"], "Douane NL", "NL", "2999-12-31", ["nl-"])

    res = runner.invoke(main, ["indicators", "verify", str(pack), "--trust", trust])
    assert res.exit_code == 0, res.output
    flat = "".join(res.output.split())
    digest = hashlib.sha256(pack.read_bytes()).hexdigest()
    assert "'DouaneRotterdam'" in flat and kg["key_id"] in flat and digest in flat
    res = runner.invoke(main, ["indicators", "verify", str(pack), "--trust", trust, "--json"])
    out = json.loads(res.stdout)
    assert out["ok"] and out["packs"][0]["sha256"] == digest

    # Commands that take pack paths load the verified pack.
    res = runner.invoke(main, ["indicators", "list", str(pack), "--trust", trust, "--json"])
    assert res.exit_code == 0, res.output
    assert [i["pack"] for i in json.loads(res.stdout)["indicators"]] == ["nl-customs-cocaine"]
    res = runner.invoke(main, ["indicators", "check", str(pack), "--trust", trust])
    assert res.exit_code == 0 and "OK" in res.output

    res = runner.invoke(main, ["indicators", "trust", "remove", kg["key_id"], "--trust", trust])
    assert res.exit_code == 0, res.output
    res = runner.invoke(main, ["indicators", "list", str(pack), "--trust", trust])
    assert res.exit_code == 1 and "untrusted key" in res.output


def test_cli_help_for_every_command():
    runner = CliRunner()
    for args in (["keygen"], ["sign"], ["verify"], ["trust"], ["trust", "add"], ["trust", "list"],
                 ["trust", "remove"], ["list"], ["check"], ["hits"]):
        res = runner.invoke(main, ["indicators", *args, "--help"])
        assert res.exit_code == 0, args
        assert len(res.output) > 200, args
    assert "--allow-unsigned" in runner.invoke(main, ["indicators", "hits", "--help"]).output
    assert "RISKENGINE_TRUST_DIR" in runner.invoke(main, ["indicators", "verify", "--help"]).output


def test_builtin_pack_needs_no_signature(tmp_path):
    assert not signature_path(default_pack_path()).exists()
    pack = load_verified_pack(default_pack_path(), tmp_path / "empty-trust")
    assert pack.id == "riskengine-default"
    res = CliRunner().invoke(main, ["indicators", "verify", str(default_pack_path())])
    assert res.exit_code == 0 and "trusted" in res.output
    # A copy outside the package is a pack like any other.
    copy = tmp_path / "default.yaml"
    shutil.copy(default_pack_path(), copy)
    with pytest.raises(PackSignatureError) as exc:
        load_verified_pack(copy, tmp_path / "empty-trust")
    assert reason(exc) == "unsigned"


# --------------------------------------------------------------------------------------------
# Failures
# --------------------------------------------------------------------------------------------

def test_one_flipped_byte_is_tampering_and_allow_unsigned_does_not_bypass_it(signed, monkeypatch):
    pack, _, store = signed
    data = bytearray(pack.read_bytes())
    i = data.index(b"critical")
    data[i] ^= 0x20  # critical -> Critical: still a valid pack, a different byte
    pack.write_bytes(bytes(data))
    for kwargs in ({}, {"allow_unsigned": True}):
        with pytest.raises(PackSignatureError, match="tampered: the pack's bytes changed after signing") as exc:
            load_verified_pack(pack, store, **kwargs)
        assert reason(exc) == "tampered"
    monkeypatch.setenv("RISKENGINE_ALLOW_UNSIGNED_PACKS", "1")
    with pytest.raises(PackSignatureError) as exc:
        load_verified_pack(pack, store)
    assert reason(exc) == "tampered"
    res = CliRunner().invoke(main, ["indicators", "check", str(pack), "--allow-unsigned",
                                    "--trust", str(store.path)])
    assert res.exit_code == 1
    assert "PackSignatureError: tampered: the pack's bytes changed after signing" in " ".join(res.output.split())


def test_an_edited_signature_file_is_tampering(signed):
    pack, _, store = signed
    sig = json.loads(signature_path(pack).read_text())
    sig["signer"] = "Someone Else"  # the pack is unchanged, what the signature claims is not
    signature_path(pack).write_text(json.dumps(sig))
    with pytest.raises(PackSignatureError, match="signature does not verify") as exc:
        verify_pack_file(pack, store)
    assert reason(exc) == "tampered"


def test_key_not_in_trust_store_is_untrusted(signed, tmp_path):
    pack, _, store = signed
    other = generate_keypair(tmp_path / "keys", "intruder")
    sign_pack_file(pack, other.private_key, signer="Douane Rotterdam", overwrite=True)
    with pytest.raises(PackSignatureError) as exc:
        verify_pack_file(pack, store)
    assert reason(exc) == "untrusted"
    assert str(exc.value).startswith(f"untrusted key {other.key_id}")
    assert "riskengine indicators trust add" in str(exc.value)
    with pytest.raises(PackSignatureError):
        load_verified_pack(pack, store, allow_unsigned=True)


def test_missing_signature_is_unsigned_unless_allowed(tmp_path, caplog, monkeypatch):
    pack = write_pack(tmp_path / "draft.yaml")
    store = TrustStore(tmp_path / "trust")
    with pytest.raises(PackSignatureError, match="unsigned: .*draft.yaml has no signature file") as exc:
        load_verified_pack(pack, store)
    assert reason(exc) == "unsigned" and "--allow-unsigned" in str(exc.value)

    with caplog.at_level(logging.WARNING, logger=LOGGER):
        loaded = load_verified_pack(pack, store, allow_unsigned=True)
    assert loaded.id == "nl-customs-cocaine"
    (rec,) = [r for r in caplog.records if r.name == LOGGER]
    assert rec.levelno == logging.WARNING and "UNSIGNED" in rec.getMessage()
    assert "draft.yaml" in rec.getMessage() and loaded.sha256 in rec.getMessage()

    caplog.clear()
    monkeypatch.setenv("RISKENGINE_ALLOW_UNSIGNED_PACKS", "1")
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert load_verified_pack(pack, store).id == "nl-customs-cocaine"
    assert "RISKENGINE_ALLOW_UNSIGNED_PACKS=1" in caplog.text
    monkeypatch.delenv("RISKENGINE_ALLOW_UNSIGNED_PACKS")

    runner = CliRunner()
    res = runner.invoke(main, ["indicators", "list", str(pack), "--trust", str(store.path)])
    assert res.exit_code == 1 and "PackSignatureError: unsigned" in res.output
    res = runner.invoke(main, ["indicators", "list", str(pack), "--allow-unsigned", "--json"])
    assert res.exit_code == 0 and "local development only" in res.stderr
    assert json.loads(res.stdout)["indicators"][0]["pack"] == "nl-customs-cocaine"
    res = runner.invoke(main, ["indicators", "hits", "--data", "unused.csv", "--pack", str(pack)])
    assert res.exit_code == 1 and "PackSignatureError: unsigned" in res.output
    res = runner.invoke(main, ["indicators", "verify", str(pack), "--trust", str(store.path)])
    assert res.exit_code == 1 and "PackSignatureError: unsigned" in res.output


def test_expired_key(tmp_path):
    keys = generate_keypair(tmp_path / "keys", "nl")
    pack = write_pack(tmp_path / "nl.yaml")
    sign_pack_file(pack, keys.private_key, signer="Douane NL")
    store = TrustStore(tmp_path / "trust")
    store.add(keys.public_key, partner="Douane NL", expires="2030-06-30", today=dt.date(2025, 1, 1))
    assert verify_pack_file(pack, store, now=dt.date(2030, 6, 30)).key_expires == dt.date(2030, 6, 30)
    with pytest.raises(PackSignatureError, match="expired: key .* of Douane NL expired on 2030-06-30") as exc:
        verify_pack_file(pack, store, now=dt.datetime(2030, 7, 1, 0, 0, tzinfo=dt.timezone.utc))
    assert reason(exc) == "expired"
    with pytest.raises(ValueError, match="in the past"):
        TrustStore(tmp_path / "t2").add(keys.public_key, partner="X", expires="2020-01-01")

    # trust.yaml is editable by hand: a past expiry stops the pack loading today.
    tf = store.trust_file
    tf.write_text(tf.read_text().replace("2030-06-30", "2021-01-01"))
    res = CliRunner().invoke(main, ["indicators", "verify", str(pack), "--trust", str(store.path)])
    assert res.exit_code == 1 and "PackSignatureError: expired" in res.output
    res = CliRunner().invoke(main, ["indicators", "trust", "list", "--trust", str(store.path), "--json"])
    assert json.loads(res.stdout)["keys"][0]["expired"] is True


def test_pack_id_outside_the_keys_prefixes(tmp_path):
    keys = generate_keypair(tmp_path / "keys", "nl")
    ours, theirs = write_pack(tmp_path / "a.yaml", "nl-fruit"), write_pack(tmp_path / "b.yaml", "be-port")
    for p in (ours, theirs):
        sign_pack_file(p, keys.private_key, signer="Douane NL")
    store = TrustStore(tmp_path / "trust")
    store.add(keys.public_key, partner="Douane NL", packs=["nl-", "eu-joint-"])
    assert verify_pack_file(ours, store).pack_id == "nl-fruit"
    with pytest.raises(PackSignatureError) as exc:
        verify_pack_file(theirs, store)
    assert reason(exc) == "pack_not_allowed"
    assert "'be-port'" in str(exc.value) and "['nl-', 'eu-joint-']" in str(exc.value)


@pytest.mark.parametrize("content, expected", [
    (b"not json {", "not JSON text"),
    (b'{"format": "riskengine-indicator-pack-signature"}', "missing ["),
    (None, "algorithm 'rsa' is not supported"),
    (b"", "not JSON text"),
])
def test_malformed_signature_file(signed, content, expected):
    pack, _, store = signed
    sig_file = signature_path(pack)
    if content is None:
        doc = json.loads(sig_file.read_text())
        doc["algorithm"] = "rsa"
        content = json.dumps(doc).encode()
    sig_file.write_bytes(content)
    with pytest.raises(PackSignatureError, match=f"malformed signature file .*{expected}".replace("[", r"\[")) as exc:
        verify_pack_file(pack, store)
    assert reason(exc) == "malformed"


def test_bad_base64_signature_is_malformed(signed):
    pack, _, store = signed
    doc = json.loads(signature_path(pack).read_text())
    doc["signature"] = "not base64!"
    signature_path(pack).write_text(json.dumps(doc))
    with pytest.raises(PackSignatureError, match="signature must be base64") as exc:
        read_signature(signature_path(pack))
    assert reason(exc) == "malformed"


def test_malformed_pem_gives_clear_errors(tmp_path):
    keys = generate_keypair(tmp_path / "keys", "nl")
    garbage = tmp_path / "partner.pub"
    garbage.write_text("hello, this is not a key\n")
    store = TrustStore(tmp_path / "trust")
    with pytest.raises(SigningKeyError, match="is not a PEM public key: expected a file starting with"):
        store.add(garbage, partner="X")
    with pytest.raises(SigningKeyError, match="is a PRIVATE key"):
        store.add(keys.private_key, partner="X")
    broken = tmp_path / "broken.pub"
    broken.write_text("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
    with pytest.raises(SigningKeyError, match="not a valid PEM public key"):
        store.add(broken, partner="X")
    with pytest.raises(SigningKeyError, match="is not a PEM private key"):
        load_private_key(garbage)
    assert not store.path.exists()  # nothing was written

    res = CliRunner().invoke(main, ["indicators", "trust", "add", str(garbage), "--name", "X",
                                    "--trust", str(store.path)])
    assert res.exit_code == 1 and "SigningKeyError" in res.output

    # A damaged key inside the store stops verification with the file's name, never a skip.
    store.add(keys.public_key, partner="NL")
    shutil.copy(garbage, store.path / "damaged.pub")
    with pytest.raises(TrustStoreError, match="damaged.pub"):
        TrustStore(store.path).keys()


def test_key_file_permissions_and_no_overwrite(tmp_path):
    keys = generate_keypair(tmp_path / "keys", "nl")
    if sys.platform != "win32":
        assert (os.stat(keys.private_key).st_mode & 0o777) == 0o600
    before = keys.private_key.read_bytes()
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        generate_keypair(tmp_path / "keys", "nl")
    res = CliRunner().invoke(main, ["indicators", "keygen", "--out", str(tmp_path / "keys"), "--name", "nl"])
    assert res.exit_code == 1 and "FileExistsError: refusing to overwrite" in res.output
    assert keys.private_key.read_bytes() == before
    with pytest.raises(ValueError, match="key name"):
        generate_keypair(tmp_path / "keys", "../escape")


def test_encrypted_private_key(tmp_path, monkeypatch):
    keys = generate_keypair(tmp_path / "keys", "nl", passphrase="correct horse")
    assert keys.encrypted and b"ENCRYPTED PRIVATE KEY" in keys.private_key.read_bytes()
    pack = write_pack(tmp_path / "nl.yaml")
    with pytest.raises(SigningKeyError, match="RISKENGINE_KEY_PASSPHRASE"):
        sign_pack_file(pack, keys.private_key, signer="NL")
    with pytest.raises(SigningKeyError, match="wrong passphrase"):
        sign_pack_file(pack, keys.private_key, signer="NL", passphrase="wrong")
    assert not signature_path(pack).exists()
    monkeypatch.setenv("RISKENGINE_KEY_PASSPHRASE", "correct horse")
    res = CliRunner().invoke(main, ["indicators", "sign", str(pack), "--key", str(keys.private_key),
                                    "--signer", "NL"])
    assert res.exit_code == 0, res.output
    store = TrustStore(tmp_path / "trust")
    store.add(keys.public_key, partner="NL")
    assert verify_pack_file(pack, store).key_id == keys.key_id
    monkeypatch.delenv("RISKENGINE_KEY_PASSPHRASE")
    res = CliRunner().invoke(main, ["indicators", "sign", str(pack), "--key", str(keys.private_key),
                                    "--signer", "NL", "--force"], input="correct horse\n")
    assert res.exit_code == 0, res.output


def test_sign_refuses_a_broken_pack_and_an_existing_signature(signed, tmp_path):
    pack, keys, _ = signed
    bad = tmp_path / "bad.yaml"
    bad.write_text("metadata: {id: x}\nindicators: []\n")
    with pytest.raises(PackError):
        sign_pack_file(bad, keys.private_key, signer="NL")
    assert not signature_path(bad).exists()
    res = CliRunner().invoke(main, ["indicators", "sign", str(pack), "--key", str(keys.private_key),
                                    "--signer", "NL"])
    assert res.exit_code == 1 and "--force" in res.output


def test_trust_store_duplicates_removal_and_rotation(tmp_path):
    old, new = generate_keypair(tmp_path / "k", "nl-2024"), generate_keypair(tmp_path / "k", "nl-2025")
    a, b = write_pack(tmp_path / "a.yaml", "nl-a"), write_pack(tmp_path / "b.yaml", "nl-b")
    sign_pack_file(a, old.private_key, signer="NL")
    sign_pack_file(b, new.private_key, signer="NL")
    store = TrustStore(tmp_path / "trust")
    store.add(old.public_key, partner="Douane NL")
    with pytest.raises(TrustStoreError, match=f"key {old.key_id} is already trusted"):
        store.add(old.public_key, partner="Douane NL")
    store.add(new.public_key, partner="Douane NL")  # rotation: both keys trusted
    assert sorted(k.key_id for k in TrustStore(store.path).keys()) == sorted([old.key_id, new.key_id])
    assert verify_pack_file(a, store).key_id == old.key_id
    assert verify_pack_file(b, store).key_id == new.key_id
    assert store.remove(old.key_id).key_id == old.key_id
    with pytest.raises(PackSignatureError) as exc:
        verify_pack_file(a, store)
    assert reason(exc) == "untrusted"
    assert verify_pack_file(b, TrustStore(store.path)).key_id == new.key_id
    with pytest.raises(TrustStoreError, match="no key 'ffffffffffffffff'"):
        store.remove("ffffffffffffffff")
    res = CliRunner().invoke(main, ["indicators", "trust", "remove", "ffffffffffffffff",
                                    "--trust", str(store.path)])
    assert res.exit_code == 1 and "TrustStoreError" in res.output


def test_a_replaced_key_file_is_refused(signed, tmp_path):
    pack, _, store = signed
    other = generate_keypair(tmp_path / "keys", "other")
    (trusted,) = store.keys()
    shutil.copy(other.public_key, trusted.file)
    with pytest.raises(TrustStoreError, match="the file was replaced"):
        verify_pack_file(pack, TrustStore(store.path))


def test_folder_of_packs_is_verified_pack_by_pack(signed):
    pack, keys, store = signed
    write_pack(pack.parent / "unsigned.yaml", "nl-other")
    with pytest.raises(PackSignatureError, match="unsigned.yaml") as exc:
        load_verified_packs(pack.parent, store)
    assert reason(exc) == "unsigned"
    sign_pack_file(pack.parent / "unsigned.yaml", keys.private_key, signer="NL")
    assert [p.id for p in load_verified_packs(pack.parent, store)] == ["nl-customs-cocaine", "nl-other"]


# --------------------------------------------------------------------------------------------
# TLP
# --------------------------------------------------------------------------------------------

def test_packs_for_clearance():
    packs = [parse_pack(tiny_pack(f"p-{tlp.lower().replace('+', '-')}", tlp))
             for tlp in ("RED", "CLEAR", "AMBER", "GREEN", "AMBER+STRICT")]
    assert [p.metadata.tlp for p in packs_for_clearance(packs, "GREEN")] == ["CLEAR", "GREEN"]
    assert [p.metadata.tlp for p in packs_for_clearance(packs, "tlp:amber")] == ["CLEAR", "AMBER", "GREEN"]
    assert len(packs_for_clearance(packs, "RED")) == 5
    assert packs_for_clearance(packs, "CLEAR") == [packs[1]]
    with pytest.raises(ValueError, match="not a TLP marking"):
        packs_for_clearance(packs, "SECRET")


# --------------------------------------------------------------------------------------------
# Packs inside a model directory
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def fitted_builder():
    from riskengine.features import FeatureBuilder
    from riskengine.mapping import native_mapping
    from riskengine.synth import generate_manifests

    m = native_mapping()
    history, _ = m.prepare(generate_manifests(400, seed=3, days=30), training=True)
    return FeatureBuilder(mapping=m, indicator_packs="default").fit(history)


def test_model_packs_are_checked_against_recorded_digests(fitted_builder, tmp_path, caplog):
    from riskengine.features import FeatureBuilder

    out = fitted_builder.save(tmp_path / "features")
    state = json.loads((out / "state.json").read_text())
    (name,) = state["pack_sha256"]
    pack_file = out / "packs" / name
    assert state["pack_sha256"][name] == hashlib.sha256(pack_file.read_bytes()).hexdigest()
    assert FeatureBuilder.load(out).indicator_ids_ == fitted_builder.indicator_ids_

    original = pack_file.read_bytes()
    pack_file.write_bytes(original.replace(b"severity: critical", b"severity: low", 1))
    with pytest.raises(PackSignatureError, match="changed after the model was saved") as exc:
        FeatureBuilder.load(out)
    assert reason(exc) == "tampered"

    pack_file.write_bytes(original)
    shutil.copy(pack_file, out / "packs" / "99_extra.yaml")
    with pytest.raises(PackSignatureError, match=r"unexpected \['99_extra.yaml'\]") as exc:
        FeatureBuilder.load(out)
    assert reason(exc) == "model_packs_changed"
    (out / "packs" / "99_extra.yaml").unlink()

    # A model saved before digests were recorded still loads, with a warning.
    del state["pack_sha256"]
    (out / "state.json").write_text(json.dumps(state))
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert FeatureBuilder.load(out).indicator_ids_ == fitted_builder.indicator_ids_
    assert "records no SHA-256" in caplog.text


def test_shipped_model_without_digests_still_loads(caplog):
    from riskengine.features import FeatureBuilder

    folder = Path(__file__).resolve().parents[1] / "models" / "manifest" / "features"
    if not (folder / "state.json").exists():
        pytest.skip("shipped model not present")
    state = json.loads((folder / "state.json").read_text())
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        fb = FeatureBuilder.load(folder)
    assert len(fb.indicator_ids_) == len(state["indicator_ids"]) > 0
    if "pack_sha256" not in state:
        assert "records no SHA-256" in caplog.text


def test_load_model_packs_without_a_folder(tmp_path):
    assert load_model_packs(tmp_path / "none", None) == []
    with pytest.raises(PackSignatureError, match=r"missing \['00_x.yaml'\]"):
        load_model_packs(tmp_path / "none", {"00_x.yaml": "0" * 64})
    assert [p.id for p in default_packs()] == ["riskengine-default"]


# --------------------------------------------------------------------------------------------
# Issuers: a key trusted for one issuer's packs cannot touch another issuer's indicators
# --------------------------------------------------------------------------------------------

def test_a_partner_key_cannot_switch_off_another_issuers_rule(tmp_path):
    """A key trusted only for be- packs signs be-douane-ovr, which redefines the built-in
    seal_mismatch_at_gate at 9.0.0 with a condition that never fires: it verifies, but the
    built-in mandatory rule keeps firing and the service refuses the pack, saying why."""
    from test_store import make_manifests

    from riskengine.indicators import merge_packs
    from riskengine.service.packs import PackSource
    from riskengine.service.scoring import mandatory_rules

    keys = generate_keypair(tmp_path / "keys", "be-douane")
    store = TrustStore(tmp_path / "default-trust")  # the trust dir of this test's environment
    store.add(keys.public_key, partner="Douane BE", country="BE", packs=["be-"])
    folder = tmp_path / "packs"
    folder.mkdir()
    doc = tiny_pack("be-douane-ovr")
    doc["metadata"]["version"] = "9.0.0"
    doc["indicators"][0]["condition"] = {"field": "packages", "lt": 0}  # never fires
    ovr = folder / "ovr.yaml"
    ovr.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    sign_pack_file(ovr, keys.private_key, signer="Douane BE")
    assert verify_pack_file(ovr, store).pack_id == "be-douane-ovr"  # the signature is fine

    manifests = make_manifests(20)
    manifests.loc[:4, "seal_number_gate"] = "XX0000001"  # 5 seals differ at the gate
    partner = load_verified_pack(ovr, store)
    merged = merge_packs(default_packs() + [partner])
    assert merged.indicator("seal_mismatch_at_gate").pack_id == "riskengine-default"
    assert [(r.indicator_id, r.pack_id) for r in merged.refused] == [("seal_mismatch_at_gate", "be-douane-ovr")]
    mask, text = mandatory_rules(manifests, 10.0, default_packs() + [partner])
    assert int(mask.sum()) == 5
    assert "Seal number at the gate differs from the manifest" in text[0]

    loaded = PackSource(folder).load()
    assert [p.pack.id for p in loaded.packs] == [p.id for p in default_packs()]
    (rejected,) = loaded.rejected
    assert (rejected.file, rejected.error_type) == ("ovr.yaml", "PackConflictError")
    assert ("pack 'be-douane-ovr' redefines indicator 'seal_mismatch_at_gate' (version 9.0.0) of pack "
            "'riskengine-default'") in rejected.reason
    assert "may only supersede its own indicators" in rejected.reason


def test_an_older_signed_pack_copied_over_a_newer_one_is_a_refused_downgrade(tmp_path):
    """Rollback: v1 (pack + .sig) copied over v2 verifies as a signature, but the trust store
    remembers 2.0.0 and refuses it; --allow-downgrade accepts it, lowers the floor, audits it."""
    keys = generate_keypair(tmp_path / "keys", "nl")
    store = TrustStore(tmp_path / "trust")
    store.add(keys.public_key, partner="Douane NL", country="NL", packs=["nl-"])
    old_dir, live = tmp_path / "v1", tmp_path / "live"
    old_dir.mkdir()
    live.mkdir()
    doc = tiny_pack()
    (old_dir / "nl.yaml").write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    sign_pack_file(old_dir / "nl.yaml", keys.private_key, signer="Douane NL")
    doc["metadata"]["version"] = "2.0.0"
    (live / "nl.yaml").write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    sign_pack_file(live / "nl.yaml", keys.private_key, signer="Douane NL")

    assert str(load_verified_pack(live / "nl.yaml", store).version) == "2.0.0"  # installed
    assert str(store.version_floor("nl-customs-cocaine")) == "2.0.0"
    for name in ("nl.yaml", "nl.yaml.sig"):  # the attacker's copy
        shutil.copy(old_dir / name, live / name)
    with pytest.raises(PackSignatureError) as exc:
        load_verified_pack(live / "nl.yaml", store)
    assert reason(exc) == "downgrade"
    assert "version 1.0.0, but version 2.0.0 was already verified" in str(exc.value)
    assert "--allow-downgrade" in str(exc.value)

    res = CliRunner().invoke(main, ["indicators", "verify", str(live / "nl.yaml"), "--trust", str(store.path)])
    assert res.exit_code == 1 and "PackSignatureError: downgrade" in res.output
    res = CliRunner().invoke(main, ["indicators", "verify", str(live / "nl.yaml"), "--trust", str(store.path),
                                    "--allow-downgrade"])
    assert res.exit_code == 0, res.output
    assert str(store.version_floor("nl-customs-cocaine")) == "1.0.0"
    events = [json.loads(line) for line in store.audit_file.read_text().splitlines()]
    assert [(e["event"], e["version"], e["previous"]) for e in events] == [
        ("floor_raised", "2.0.0", None), ("downgrade_refused", "1.0.0", "2.0.0"),
        ("downgrade_refused", "1.0.0", "2.0.0"), ("downgrade_allowed", "1.0.0", "2.0.0")]
    assert str(load_verified_pack(live / "nl.yaml", store).version) == "1.0.0"  # the operator's choice


def test_the_service_refuses_a_rolled_back_pack(tmp_path):
    from riskengine.service.packs import PackSource

    keys = generate_keypair(tmp_path / "keys", "nl")
    TrustStore(tmp_path / "default-trust").add(keys.public_key, partner="Douane NL", packs=["nl-"])
    live = tmp_path / "packs"
    live.mkdir()
    doc = tiny_pack()
    doc["indicators"][0]["id"] = "nl_seal_changed"  # its own id: the built-in one is not NL's
    doc["metadata"]["version"] = "2.0.0"
    write = lambda: (live / "nl.yaml").write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")  # noqa: E731
    write()
    sign_pack_file(live / "nl.yaml", keys.private_key, signer="Douane NL")
    source = PackSource(live)
    assert "nl-customs-cocaine" in [p.pack.id for p in source.load().packs]
    doc["metadata"]["version"] = "1.0.0"
    write()
    sign_pack_file(live / "nl.yaml", keys.private_key, signer="Douane NL", overwrite=True)
    loaded = source.load()
    assert "nl-customs-cocaine" not in [p.pack.id for p in loaded.packs]
    assert [(r.file, r.error_type) for r in loaded.rejected] == [("nl.yaml", "PackSignatureError")]
    assert loaded.rejected[0].reason.startswith("downgrade: ")


def test_a_bare_public_key_in_the_trust_folder_is_not_trusted_unless_opted_in(tmp_path, caplog, monkeypatch):
    """A .pub copied into the trust folder without a trust.yaml entry would sign any pack id
    without expiry: it is ignored (with a warning naming the fix) unless bare keys are allowed."""
    keys = generate_keypair(tmp_path / "keys", "dropped")
    pack = write_pack(tmp_path / "any.yaml", "xx-anything")
    sign_pack_file(pack, keys.private_key, signer="Someone")
    trust = tmp_path / "trust"
    trust.mkdir()
    shutil.copy(keys.public_key, trust / "dropped.pub")
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert len(TrustStore(trust)) == 0
        with pytest.raises(PackSignatureError) as exc:
            verify_pack_file(pack, TrustStore(trust))
    assert reason(exc) == "untrusted"
    assert "dropped.pub" in caplog.text and "is NOT trusted" in caplog.text and "trust add" in caplog.text
    res = CliRunner().invoke(main, ["indicators", "verify", str(pack), "--trust", str(trust)])
    assert res.exit_code == 1 and "PackSignatureError: untrusted key" in " ".join(res.output.split())

    assert verify_pack_file(pack, TrustStore(trust, bare_keys=True)).partner == "dropped"
    monkeypatch.setenv("RISKENGINE_TRUST_BARE_KEYS", "1")
    assert verify_pack_file(pack, TrustStore(trust)).pack_id == "xx-anything"
