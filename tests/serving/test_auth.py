"""API keys: hashing, `RECSYS_API_KEYS` parsing, 401 without a valid key, 403 across sellers."""

from __future__ import annotations

import doctest

import pytest

from recsys.config import ConfigError
from serving import auth
from serving.auth import (
    ADMIN_PRINCIPAL,
    ENV_VAR,
    AccessError,
    ApiKeyEntry,
    AuthError,
    ForbiddenError,
    KeyRing,
    Principal,
    generate_key,
    hash_key,
    parse_env_keys,
)

SELLER_KEY = "seller-one-key-0123456789"
OTHER_KEY = "seller-two-key-0123456789"
ADMIN_KEY = "admin-key-abcdefghijklmnop"


@pytest.fixture
def ring() -> KeyRing:
    return KeyRing(parse_env_keys(f"{SELLER_KEY}:s1, {OTHER_KEY}:s2, {ADMIN_KEY}:*"))


def _auth_error(ring: KeyRing, header: str | None) -> AuthError:
    with pytest.raises(AuthError) as info:
        ring.authenticate(header)
    return info.value


# --------------------------------------------------------------------------- hashing


def test_hash_key_matches_the_sha256_known_answer() -> None:
    # FIPS 180-2 test vector for "abc".
    expected = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert hash_key("abc") == f"sha256:{expected}"
    assert hash_key("") == (
        "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    )


def test_generated_keys_are_long_random_and_accepted_by_the_env_parser() -> None:
    keys = {generate_key() for _ in range(20)}
    assert len(keys) == 20
    assert all(len(k) >= 40 and ":" not in k and "," not in k for k in keys)
    key = keys.pop()
    (entry,) = parse_env_keys(f"{key}:s1")
    assert entry.key_hash == hash_key(key)


def test_module_doctests_pass() -> None:
    assert doctest.testmod(auth).failed == 0


# --------------------------------------------------------------------------- config entries


def test_api_key_entry_accepts_a_hash_and_normalises_its_case() -> None:
    digest = hash_key(SELLER_KEY)
    entry = ApiKeyEntry(key_hash="  " + digest.upper().replace("SHA256", "sha256"), seller_id="s1")
    assert entry.key_hash == digest
    assert not entry.admin
    assert ApiKeyEntry(key_hash=digest, seller_id="*").admin


@pytest.mark.parametrize(
    "bad", ["sha256:abc", "md5:" + "0" * 64, "sha256:" + "g" * 64, "0" * 64, "a-raw-key-1234567"]
)
def test_api_key_entry_rejects_a_malformed_hash_without_repeating_it_in_its_hint(bad: str) -> None:
    with pytest.raises(ConfigError) as info:
        ApiKeyEntry.from_dict({"key_hash": bad, "seller_id": "s1"})
    message = str(info.value)
    assert "'sha256:' followed by 64 hex digits" in message
    assert "hash_key" in message


def test_api_key_entry_forbids_unknown_keys_and_an_empty_seller() -> None:
    digest = hash_key(SELLER_KEY)
    with pytest.raises(ConfigError, match="unknown key 'key'"):
        ApiKeyEntry.from_dict({"key_hash": digest, "seller_id": "s1", "key": SELLER_KEY})
    with pytest.raises(ConfigError, match="seller_id must name a seller"):
        ApiKeyEntry.from_dict({"key_hash": digest, "seller_id": "  "})


# --------------------------------------------------------------------------- RECSYS_API_KEYS


def test_env_keys_are_parsed_tolerating_whitespace_and_empty_entries() -> None:
    entries = parse_env_keys(f" {SELLER_KEY} : s1 ,, \n{ADMIN_KEY}:* , ,")
    assert [(e.key_hash, e.seller_id) for e in entries] == [
        (hash_key(SELLER_KEY), "s1"),
        (hash_key(ADMIN_KEY), "*"),
    ]
    assert parse_env_keys("") == []
    assert parse_env_keys(" , ") == []


def test_env_keys_keep_only_hashes() -> None:
    entries = parse_env_keys(f"{SELLER_KEY}:s1")
    assert SELLER_KEY not in repr(entries)
    assert SELLER_KEY not in str(entries[0].model_dump())


def test_a_seller_id_may_contain_colons() -> None:
    (entry,) = parse_env_keys(f"{SELLER_KEY}:shop:eu:42")
    assert entry.seller_id == "shop:eu:42"


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ("nocolonbutalongsecretkey", "no ':'"),
        (":s1", "empty key"),
        ("longsecretkey-0123456789:", "no seller id"),
        ("zq7vx wy8kj 0193847561:s1", "whitespace inside the key"),
        ("zq7vxwy8:s1", "shorter than 16 characters"),
    ],
)
def test_a_malformed_env_entry_names_its_position_and_the_form_but_not_the_key(
    entry: str, problem: str
) -> None:
    text = f"{SELLER_KEY}:s1, ,{entry}"
    with pytest.raises(ValueError) as info:
        parse_env_keys(text)
    message = str(info.value)
    assert f"{ENV_VAR}: entry 3 of 3" in message
    assert problem in message
    assert "key:seller_id" in message and "key:*" in message
    secret = entry.partition(":")[0]
    for word in secret.split():
        assert word not in message
    assert SELLER_KEY not in message


def test_key_ring_from_sources_merges_config_and_environment() -> None:
    config = [ApiKeyEntry(key_hash=hash_key(SELLER_KEY), seller_id="s1")]
    ring = KeyRing.from_sources(config, env={ENV_VAR: f"{ADMIN_KEY}:*"})
    assert len(ring) == 2
    assert ring.authenticate(f"Bearer {SELLER_KEY}") == Principal("s1", admin=False)
    assert ring.authenticate(f"Bearer {ADMIN_KEY}") == ADMIN_PRINCIPAL
    assert len(KeyRing.from_sources(config, env={})) == 1


def test_key_ring_from_sources_reads_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_VAR, f"{OTHER_KEY}:s2")
    assert KeyRing.from_sources().authenticate(f"Bearer {OTHER_KEY}").seller_id == "s2"


# --------------------------------------------------------------------------- 401


def test_a_known_key_identifies_its_seller_or_the_admin(ring: KeyRing) -> None:
    assert ring.authenticate(f"Bearer {SELLER_KEY}") == Principal("s1", admin=False)
    assert ring.authenticate(f"bearer   {OTHER_KEY} ") == Principal("s2", admin=False)
    assert ring.authenticate(f"Bearer {ADMIN_KEY}") == ADMIN_PRINCIPAL


@pytest.mark.parametrize("header", [None, "", "   "])
def test_no_key_is_401_saying_how_to_send_one(ring: KeyRing, header: str | None) -> None:
    error = _auth_error(ring, header)
    assert error.status == 401
    assert "missing API key" in str(error)
    assert "Authorization: Bearer <key>" in str(error)
    assert error.headers == {"WWW-Authenticate": "Bearer"}


@pytest.mark.parametrize(
    "header", [f"Basic {SELLER_KEY}", SELLER_KEY, f"Token {SELLER_KEY}", "Bearer", "Bearer a b"]
)
def test_a_malformed_header_is_401_and_never_quotes_the_header(ring: KeyRing, header: str) -> None:
    error = _auth_error(ring, header)
    assert error.status == 401
    assert "Authorization: Bearer <key>" in str(error)
    assert SELLER_KEY not in str(error)


def test_an_unknown_key_is_401_without_quoting_it(ring: KeyRing) -> None:
    wrong = "not-a-known-key-0123456789"
    error = _auth_error(ring, f"Bearer {wrong}")
    assert error.status == 401
    assert "unknown API key" in str(error)
    assert wrong not in str(error)
    # A stored hash presented as if it were a key is not a key.
    assert _auth_error(ring, f"Bearer {hash_key(SELLER_KEY)}").status == 401


def test_an_empty_key_ring_refuses_everyone() -> None:
    assert _auth_error(KeyRing([]), f"Bearer {SELLER_KEY}").status == 401


# --------------------------------------------------------------------------- 403


def test_an_admin_may_access_every_seller_and_platform_wide_offers() -> None:
    assert ADMIN_PRINCIPAL.may_access("s1")
    assert ADMIN_PRINCIPAL.may_access("s2")
    assert ADMIN_PRINCIPAL.may_access(None)
    KeyRing.authorize(ADMIN_PRINCIPAL, "s2")
    KeyRing.authorize(ADMIN_PRINCIPAL, None)


def test_a_seller_key_may_access_only_its_own_seller(ring: KeyRing) -> None:
    principal = ring.authenticate(f"Bearer {SELLER_KEY}")
    assert principal.may_access("s1")
    assert not principal.may_access("s2")
    assert not principal.may_access(None)  # platform-wide offers are not the seller's
    assert not principal.may_access("S1")
    KeyRing.authorize(principal, "s1")


def test_another_sellers_data_is_403_naming_both_sellers(ring: KeyRing) -> None:
    principal = ring.authenticate(f"Bearer {SELLER_KEY}")
    with pytest.raises(ForbiddenError) as info:
        ring.authorize(principal, "s2")
    assert info.value.status == 403
    assert "'s1'" in str(info.value) and "'s2'" in str(info.value)
    assert info.value.headers == {}
    with pytest.raises(ForbiddenError, match=r"platform-wide offers .* need an admin key"):
        ring.authorize(principal, None)


def test_both_errors_are_access_errors_with_a_status() -> None:
    assert issubclass(AuthError, AccessError) and issubclass(ForbiddenError, AccessError)
    assert AuthError("x").status == 401 and ForbiddenError("x").status == 403
    assert AuthError("x").message == "x"


def test_a_principal_is_either_admin_or_one_seller() -> None:
    with pytest.raises(ValueError, match="either an admin"):
        Principal(seller_id="s1", admin=True)
    with pytest.raises(ValueError, match="either an admin"):
        Principal(seller_id=None, admin=False)


# --------------------------------------------------------------------------- duplicates


def test_the_same_key_listed_twice_for_one_seller_is_fine() -> None:
    entry = ApiKeyEntry(key_hash=hash_key(SELLER_KEY), seller_id="s1")
    ring = KeyRing.from_sources([entry], env={ENV_VAR: f"{SELLER_KEY}:s1"})
    assert len(ring) == 1


def test_one_key_for_two_sellers_is_a_construction_error_naming_them() -> None:
    config = [ApiKeyEntry(key_hash=hash_key(SELLER_KEY), seller_id="s1")]
    with pytest.raises(ValueError) as info:
        KeyRing.from_sources(config, env={ENV_VAR: f"{SELLER_KEY}:*"})
    message = str(info.value)
    assert "two sellers" in message and "'s1'" in message and "'*'" in message
    assert "remove one of the entries" in message
    assert SELLER_KEY not in message
