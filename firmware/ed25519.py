"""Ed25519 signature verification (RFC 8032 5.1) for MicroPython's big ints: the node
checks a release manifest against the release public key before it installs anything.

Verification only (the node never signs). Extended twisted Edwards coordinates
(X:Y:Z:T), RFC 8032 5.1.4; [S]B - [k]A is computed in one pass (Straus' trick) and its
encoding compared with R, which also refuses an R that is not a canonical encoding."""
from micropython import const

from sha512 import SHA512

_P = const(0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFED)  # 2^255 - 19
_L = const(0x1000000000000000000000000000000014DEF9DEA2F79CD65812631A5CF5D3ED)  # group order
# d = -121665/121666 mod p and sqrt(-1) = 2^((p-1)/4) mod p (RFC 8032 5.1).
_D = const(0x52036CEE2B6FFE738CC740797779E89800700A4D4141D8AB75EB4DCA135978A3)
_SQRT_M1 = const(0x2B8324804FC1DF0B2B4D00993DFBD7A72F431806AD2FE478C4EE1B274A0EA0B0)
# The base point B (y = 4/5, x even), RFC 8032 5.1.
_BX = const(0x216936D3CD6E53FEC0A4E231FDD6DC5C692CC7609525A7B2C9562D608F25D51A)
_BY = const(0x6666666666666666666666666666666666666666666666666666666666666658)


def _add(p, q):
    # RFC 8032 5.1.4 addition (a = -1), every product reduced mod p.
    a = (p[1] - p[0]) * (q[1] - q[0]) % _P
    b = (p[1] + p[0]) * (q[1] + q[0]) % _P
    c = 2 * p[3] * q[3] % _P * _D % _P
    d = 2 * p[2] * q[2] % _P
    e = b - a
    f = d - c
    g = d + c
    h = b + a
    return (e * f % _P, g * h % _P, f * g % _P, e * h % _P)


def _double(p):
    # RFC 8032 5.1.4 doubling: A = X1^2, B = Y1^2, C = 2*Z1^2, H = A+B, E = H-(X1+Y1)^2,
    # G = A-B, F = C+G.
    x, y, z = p[0], p[1], p[2]
    a = x * x % _P
    b = y * y % _P
    c = 2 * z * z % _P
    h = a + b
    s = x + y
    e = h - s * s % _P
    g = a - b
    f = c + g
    return (e * f % _P, g * h % _P, f * g % _P, e * h % _P)


def _decode_point(s):
    """RFC 8032 5.1.3: 32 bytes -> (X, Y, 1, T), or None if not a valid point."""
    y = int.from_bytes(s, "little")
    sign = y >> 255
    y &= (1 << 255) - 1
    if y >= _P:
        return None
    u = (y * y - 1) % _P
    v = (_D * y * y + 1) % _P
    x2 = u * pow(v, _P - 2, _P) % _P
    if x2 == 0:
        if sign:
            return None
        return (0, y, 1, 0)
    x = pow(x2, (_P + 3) // 8, _P)
    if (x * x - x2) % _P:
        x = x * _SQRT_M1 % _P
        if (x * x - x2) % _P:
            return None
    if x & 1 != sign:
        x = _P - x
    return (x, y, 1, x * y % _P)


def _encode_point(p):
    zi = pow(p[2], _P - 2, _P)
    x = p[0] * zi % _P
    y = p[1] * zi % _P
    return (y | ((x & 1) << 255)).to_bytes(32, "little")


def verify(public_key, signature, message=None, path=None, chunk=512):
    """True if signature (64 bytes) is public_key's (32 bytes) Ed25519 signature of the
    message: bytes, or the contents of the file at path, hashed in chunks (never the
    whole file in RAM). False for anything malformed; never raises on bad input."""
    if len(public_key) != 32 or len(signature) != 64:
        return False
    a = _decode_point(public_key)
    if a is None:
        return False
    r = signature[:32]
    s = int.from_bytes(signature[32:], "little")
    if s >= _L:  # RFC 8032 5.1.7 step 1: S must be in range (no malleability)
        return False
    h = SHA512(r)
    h.update(public_key)
    if path is None:
        h.update(message)
    else:
        buf = bytearray(chunk)
        mv = memoryview(buf)
        with open(path, "rb") as f:
            while True:
                n = f.readinto(buf)
                if not n:
                    break
                h.update(mv[:n])
    k = int.from_bytes(h.digest(), "little") % _L
    # [S]B + [k](-A), one doubling per bit for both scalars (Straus / Shamir).
    neg_a = ((_P - a[0]) % _P, a[1], 1, (_P - a[3]) % _P)
    b = (_BX, _BY, 1, _BX * _BY % _P)
    both = _add(b, neg_a)
    q = (0, 1, 1, 0)  # the neutral element
    for i in range(255, -1, -1):
        q = _double(q)
        bit_s = (s >> i) & 1
        bit_k = (k >> i) & 1
        if bit_s and bit_k:
            q = _add(q, both)
        elif bit_s:
            q = _add(q, b)
        elif bit_k:
            q = _add(q, neg_a)
    return _encode_point(q) == bytes(r)
