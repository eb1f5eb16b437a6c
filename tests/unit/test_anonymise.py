"""Anonymisation: mask, keyed hash and fakes; shapes, determinism, key dependence, empties and errors."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
from typing import Any

import pandas as pd
import pytest

from dms.transform.anonymise import FAKE_KINDS, HASH_LENGTH, METHODS, anonymise

SALT = "s3cret-Salt-9f2c"
OTHER_SALT = "another-salt-77"


def series(values: list[Any], **kw: Any) -> pd.Series:
    return pd.Series(values, dtype="str", **kw)


def run(values: list[Any], method: str, salt: str = SALT, **kw: Any) -> list[str]:
    result = anonymise(series(values), method, salt=salt, **kw)
    assert result.dtype == "str"
    assert len(result) == len(values)
    return result.tolist()


PEOPLE = [f"customer-{i}@corp{i % 7}.cn" for i in range(300)]


# ---------------------------------------------------------------- mask


def test_mask_replaces_every_character_and_keeps_empties() -> None:
    assert run(["secret", "", "北京市", "a b"], "mask") == ["******", "", "***", "***"]


def test_mask_keeps_the_last_characters_of_values_longer_than_keep() -> None:
    assert run(["13812345678", "1,234.50", "", "1234", "12", "客户名称很长"], "mask", keep=4) == [
        "*******5678",
        "****4.50",
        "",
        "****",  # not longer than keep: masked entirely, else it would show it all
        "**",
        "**名称很长",
    ]


def test_mask_email_keeps_the_first_character_and_the_domain() -> None:
    assert run(["john@example.com", "j@x.org", "a.b@c@d.org", "not an email", "@x.com", ""], "mask", kind="email") == [
        "j***@example.com",
        "*@x.org",  # a one-character local part is masked too
        "a****@d.org",  # split at the last "@"
        "************",
        "******",
        "",
    ]


def test_mask_keeps_the_index_and_reads_other_dtypes() -> None:
    result = anonymise(pd.Series(["ab", None, 12], dtype=object, index=[5, 6, 7]), "mask", salt=SALT)
    assert result.index.tolist() == [5, 6, 7]
    assert result.tolist() == ["**", "", "**"]


# ---------------------------------------------------------------- hash


def test_hash_is_the_keyed_hmac_sha256_truncated() -> None:
    (hashed,) = run(["A-001"], "hash")
    expected = hmac.new(SALT.encode(), b"A-001", hashlib.sha256).hexdigest()[:HASH_LENGTH]
    assert hashed == expected
    assert re.fullmatch(r"[0-9a-f]{16}", hashed)


def test_hash_is_deterministic_across_runs_and_objects_and_keeps_empties() -> None:
    first = run(["A-001", "A-002", "", "A-001"], "hash")
    assert first[0] == first[3] and first[0] != first[1] and first[2] == ""
    # Another object (another series, another index) hashing the same ids: the join still matches.
    other = anonymise(series(["A-002", "A-001"], index=[10, 11]), "hash", salt=SALT)
    assert other.tolist() == [first[1], first[0]]
    assert other.index.tolist() == [10, 11]


def test_hash_depends_on_the_salt() -> None:
    assert run(["A-001"], "hash") != run(["A-001"], "hash", salt=OTHER_SALT)


def test_hash_is_case_sensitive_except_for_emails() -> None:
    plain = run(["Ann@X.com", "ann@x.com"], "hash")
    assert plain[0] != plain[1]
    emails = run(["Ann@X.com", " ann@x.com ", "bob@x.com", ""], "hash", kind="email")
    assert emails[0] == emails[1] != emails[2]
    assert emails[3] == ""
    assert all(re.fullmatch(r"[0-9a-f]{16}@example\.invalid", e) for e in emails[:3])


def test_distinct_values_get_distinct_hashes() -> None:
    assert len(set(run(PEOPLE, "hash"))) == len(PEOPLE)


# ---------------------------------------------------------------- fake

SHAPES = {
    "name": r"[\u4e00-\u9fff]{2,3}",
    "name_en": r"[A-Z][a-z]+ [A-Z][a-z]+",
    "email": r"[a-z]+\.[a-z]+[0-9]{1,4}@example\.(com|net|org)",
    "phone": r"1[3-9][0-9]-[0-9]{4}-[0-9]{4}",
    "company": r"[\u4e00-\u9fff]+有限公司",
    "text": r"[A-Z][a-z ]*",
    "number": r"[0-9]+",
    "date": r"[0-9]{4}-[0-9]{2}-[0-9]{2}",
}


def test_every_fake_kind_has_a_shape_here() -> None:
    assert set(SHAPES) == set(FAKE_KINDS)


@pytest.mark.parametrize("kind", FAKE_KINDS)
def test_fakes_have_the_shape_of_their_kind(kind: str) -> None:
    sources = [str(1000 + i) if kind == "number" else f"value number {i}" for i in range(200)]
    fakes = run(sources, "fake", kind=kind)
    assert all(re.fullmatch(SHAPES[kind], f) for f in fakes), [f for f in fakes if not re.fullmatch(SHAPES[kind], f)]
    assert len(set(fakes)) > 100  # varied, though not guaranteed distinct


@pytest.mark.parametrize("kind", FAKE_KINDS)
def test_fakes_are_deterministic_keyed_and_keep_empties(kind: str) -> None:
    sources = ["2024-05-31", "1234", "王芳", "", "2024-05-31"]
    first = run(sources, "fake", kind=kind)
    assert first == run(sources, "fake", kind=kind)
    assert first[0] == first[4]
    assert first[3] == ""
    other = run(sources, "fake", kind=kind, salt=OTHER_SALT)
    assert other != first


def test_fake_emails_follow_the_address_not_its_spelling() -> None:
    fakes = run(["Ann@X.com", " ann@x.com", "bob@x.com"], "fake", kind="email")
    assert fakes[0] == fakes[1] != fakes[2]


def test_fake_text_is_never_longer_than_the_value() -> None:
    sources = ["x", "ab", "a longer description of a customer", "客户", "y" * 5000]
    fakes = run(sources, "fake", kind="text")
    assert all(0 < len(f) <= len(s) for f, s in zip(fakes, sources, strict=True))
    assert len(fakes[-1]) > 4900


def test_fake_numbers_keep_their_shape_and_magnitude() -> None:
    sources = ["-12", "0.5", "1,234.50", "007", "138-1234-5678", "abc"]
    fakes = run(sources, "fake", kind="number")
    shapes = [
        r"-[1-9][0-9]",
        r"0\.[0-9]",
        r"[1-9],[0-9]{3}\.[0-9]{2}",
        r"0[0-9]{2}",
        r"[1-9][0-9]{2}-[0-9]{4}-[0-9]{4}",
    ]
    assert all(re.fullmatch(p, f) for p, f in zip(shapes, fakes, strict=False)), fakes
    assert re.fullmatch(r"[1-9][0-9]{2}", fakes[-1])  # letters become digits: nothing leaks


def test_fake_dates_move_real_dates_by_up_to_a_year_and_keep_a_time() -> None:
    sources = [f"2024-{m:02d}-{d:02d}" for m in range(1, 13) for d in (1, 15, 28)] + ["2024-05-31T10:00:00Z"]
    fakes = run(sources, "fake", kind="date")
    for source, fake in zip(sources, fakes, strict=True):
        shift = abs((dt.date.fromisoformat(fake[:10]) - dt.date.fromisoformat(source[:10])).days)
        assert 1 <= shift <= 365
        assert fake[10:] == source[10:]


def test_fake_dates_for_values_that_are_not_dates() -> None:
    fakes = run(["unknown", "20240531", "2024-02-30"], "fake", kind="date")
    for fake in fakes:
        assert dt.date(1950, 1, 1) <= dt.date.fromisoformat(fake) < dt.date(2010, 1, 1)


def test_fake_kinds_are_independent_of_each_other() -> None:
    # The same source faked as a name and as an English name does not reuse one draw for both.
    names = run(PEOPLE[:50], "fake", kind="name_en")
    emails = run(PEOPLE[:50], "fake", kind="email")
    same = sum(e.split("@")[0].startswith(n.split()[0].lower() + ".") for n, e in zip(names, emails, strict=True))
    assert same < 10


def test_a_large_column_with_few_distinct_values() -> None:
    values = ["a", "b", "", "c"] * 25_000
    result = run(values, "fake", kind="phone")
    assert result[:4] == result[4:8] and result[2] == ""
    assert len(set(result)) == 4


# ---------------------------------------------------------------- the salt stays secret


@pytest.mark.parametrize(
    ("method", "kind"),
    [("mask", None), ("mask", "email"), ("hash", None), ("hash", "email")] + [("fake", k) for k in FAKE_KINDS],
)
def test_the_salt_never_appears_in_the_output(method: str, kind: str | None) -> None:
    sources = [SALT, f"x{SALT}y", "plain", "", "2024-01-01", "a@b.com"]
    outputs = run(sources, method, kind=kind)
    assert not any(SALT in o for o in outputs)


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("method", "kw", "message"),
    [
        ("scramble", {}, "unknown anonymisation method 'scramble'; the methods are mask, hash, fake"),
        ("mask", {"kind": "phone"}, "mask: unknown kind 'phone'; the kinds are email"),
        ("hash", {"kind": "name"}, "hash: unknown kind 'name'; the kinds are email"),
        (
            "fake",
            {"kind": "ssn"},
            "fake: unknown kind 'ssn'; the kinds are company, date, email, name, name_en, number, phone, text",
        ),
        ("fake", {}, "fake needs a kind; the kinds are company, date, email, name, name_en, number, phone, text"),
        ("mask", {"keep": -1}, "keep must be a whole number of characters, 0 or more, not -1"),
        ("mask", {"keep": 1.5}, "keep must be a whole number of characters, 0 or more, not 1.5"),
        ("mask", {"keep": True}, "keep must be a whole number of characters, 0 or more, not True"),
        ("hash", {"keep": 4}, "keep applies to mask without a kind only"),
        ("mask", {"kind": "email", "keep": 2}, "keep applies to mask without a kind only"),
    ],
)
def test_errors_list_the_allowed_values_and_never_the_salt(method: str, kw: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError) as info:
        anonymise(series(["x"]), method, salt=SALT, **kw)
    assert str(info.value) == message
    assert SALT not in str(info.value)


@pytest.mark.parametrize("method", ["hash", "fake"])
def test_hash_and_fake_need_a_salt(method: str) -> None:
    kind = "name" if method == "fake" else None
    with pytest.raises(ValueError, match="needs a non-empty salt"):
        anonymise(series(["x"]), method, salt="", kind=kind)


def test_the_methods_are_published() -> None:
    assert METHODS == ("mask", "hash", "fake")
