"""The chunker polynomial a restic repository's config names: a random irreducible polynomial of degree 53
over GF(2), as restic's `chunker.RandomPolynomial` makes it. restic refuses a config whose polynomial is
not irreducible, and uses it for its own Rabin chunking when it backs up into our repository, so ours
must be a proper one even though our own split does not use it (see `chunking`).
"""

from __future__ import annotations

import secrets

DEGREE = 53


def _deg(p: int) -> int:
    return p.bit_length() - 1


def _mod(a: int, m: int) -> int:
    dm = _deg(m)
    while a and _deg(a) >= dm:
        a ^= m << (_deg(a) - dm)
    return a


def _mulmod(a: int, b: int, m: int) -> int:
    result = 0
    while b:
        if b & 1:
            result ^= a
        b >>= 1
        a <<= 1
        if a >> _deg(m) & 1:
            a ^= m
    return _mod(result, m)


def _gcd(a: int, b: int) -> int:
    while b:
        a, b = b, _mod(a, b)
    return a


def irreducible(p: int) -> bool:
    """Ben-Or's test: p has no factor of degree ≤ deg(p)/2 iff gcd(x^(2^i) - x, p) = 1 for each such i."""
    if p < 2:
        return False
    x = 2
    power = x
    for _ in range(_deg(p) // 2):
        power = _mulmod(power, power, p)
        if _gcd(power ^ x, p) != 1:
            return False
    return True


def random_polynomial() -> int:
    while True:
        p = secrets.randbits(DEGREE) | (1 << DEGREE) | 1
        if irreducible(p):
            return p
