"""Ed25519 verification (firmware/ed25519.py) and SHA-512 (firmware/sha512.py) on the real
interpreter: RFC 8032 7.1 test vectors, signatures made on the host by the `cryptography`
package, refusals of tampered input, and the time and heap one verification takes."""
import binascii
import gc
import os
import time

import ed25519
from sha512 import SHA512

_h = binascii.unhexlify

# RFC 8032 7.1: TEST 1, TEST 2, TEST 3 and TEST SHA(abc) (public key, message, signature).
RFC8032 = (
    ("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a", "",
     "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"),
    ("3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c", "72",
     "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00"),
    ("fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025", "af82",
     "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a"),
    ("ec172b93ad5e563bf4932c70e1245034c35467ef2efd4d64ebf819683467e2bf",
     "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f",
     "dc2a4459e7369633a52b1bf277839a00201009a3efbf3ecb69bea2186c26b58909351fc9ac90b3ecfdfbc7c66431e0303dca179c138ac17ad9bef1177331a704"),
)

# Made on the host with cryptography's Ed25519PrivateKey (seed = SHA-256 of
# b"campusfleet-ota-<n>"), over the message _msg(n): (public key, n, signature).
HOST = (
    ("2e92c81517167cbd2eee6643f1be1d4cc56319c297e957af9c762b2600b57efb", 0,
     "b1eb8452acc35992dc13a8ebce3f53043ac0cd1d203ef73b64937c6082b52d9a9a1eaaeada2916e6b3d6133b312574b07bf0b903687d19d4d1c778f85809480f"),
    ("c8ac2f36f3fdac5466601aada82a486ef0b171634975c9f7af8aac3af3d6e7d4", 33,
     "ac9b877fd4cd478ab634527f1c6d3ae4c03acb1c4dee032de38ffe3b7c19b6c2028a2ac3ae544734c597ca6431d9f78c5df021c6a0faef6c91e97a3dd03b780d"),
    ("e7e503ff092c98baba0b6ea422943b0c50e37e08581afb4028a6deace6ca491a", 200,
     "a1fc9a25f50b368c289806656cfcd1188f8150e3989d46ae58d9a59af62900ab1fff0d63c7fbec5958cf9f5911cf3b3a7f12dd14e75c4375a5c042c4d4753002"),
    ("e75893d94b1f1893199986b090862763ed600ae7db6e3fbfe074560fa086fd18", 1500,
     "5b79abf4153a2a98ac1abb722bd8e599654337fd44fd4c4bed6e8a5d18cdb02d69806b59ed9b8fa4914001e8fa101b9dd5bbeb27e1f2a3baa73e51fc4002c603"),
)


def _msg(n):
    return bytes((i * 7 + n) & 255 for i in range(n))


def test_sha512_matches_fips_180_examples():
    # FIPS 180-2 appendix C.1 ("abc") and the empty message.
    assert binascii.hexlify(SHA512(b"abc").digest()) == (
        b"ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a"
        b"2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f")
    assert binascii.hexlify(SHA512(b"").digest())[:16] == b"cf83e1357eefb8bd"


def test_sha512_streaming_equals_one_shot_across_block_edges():
    data = bytes(i & 255 for i in range(300))
    for cut in (0, 1, 111, 112, 127, 128, 129, 255, 300):
        h = SHA512(data[:cut])
        h.update(data[cut:])
        assert h.digest() == SHA512(data).digest(), cut


def test_rfc8032_vectors_verify():
    for pk, msg, sig in RFC8032:
        assert ed25519.verify(_h(pk), _h(sig), _h(msg)), pk


def test_signatures_made_by_cryptography_on_the_host_verify():
    for pk, n, sig in HOST:
        assert ed25519.verify(_h(pk), _h(sig), _msg(n)), n


def test_tampered_message_signature_or_key_is_refused():
    pk, msg, sig = (_h(x) for x in RFC8032[2])
    assert not ed25519.verify(pk, sig, msg + b"\x00")
    assert not ed25519.verify(pk, sig, b"\xaf\x83")
    bad = bytearray(sig)
    bad[5] ^= 1
    assert not ed25519.verify(pk, bytes(bad), msg)
    bad = bytearray(sig)
    bad[40] ^= 1  # S changed
    assert not ed25519.verify(pk, bytes(bad), msg)
    other = _h(RFC8032[1][0])
    assert not ed25519.verify(other, sig, msg)
    # Malformed input is refused, never raised.
    assert not ed25519.verify(pk[:31], sig, msg)
    assert not ed25519.verify(pk, sig[:63], msg)
    # S >= L (RFC 8032 5.1.7: malleable signatures are refused).
    s = int.from_bytes(sig[32:], "little") + 0x1000000000000000000000000000000014DEF9DEA2F79CD65812631A5CF5D3ED
    assert not ed25519.verify(pk, sig[:32] + s.to_bytes(32, "little"), msg)
    # A public key that is not a curve point (y = 2 has no x).
    assert not ed25519.verify((2).to_bytes(32, "little"), sig, msg)


def test_verify_from_a_file_hashes_it_in_chunks():
    pk, n, sig = HOST[3]
    with open("ed_msg.bin", "wb") as f:
        f.write(_msg(n))
    try:
        assert ed25519.verify(_h(pk), _h(sig), path="ed_msg.bin", chunk=256)
        with open("ed_msg.bin", "ab") as f:
            f.write(b"!")
        assert not ed25519.verify(_h(pk), _h(sig), path="ed_msg.bin")
    finally:
        os.remove("ed_msg.bin")


def test_verification_time_and_heap_are_printed():
    # Figures for docs/performance.md ("OTA"): the median time of 5 verifications of a
    # 1500-byte message, and the heap before and after one (after a collection: nothing
    # stays behind). The peak is measured as the smallest -X heapsize that still
    # verifies (docs/performance.md has the command).
    pk, n, sig = (_h(HOST[3][0]), HOST[3][1], _h(HOST[3][2]))
    msg = _msg(n)
    times = []
    for _ in range(5):
        t = time.ticks_us()
        assert ed25519.verify(pk, sig, msg)
        times.append(time.ticks_diff(time.ticks_us(), t))
    times.sort()
    gc.collect()
    before = gc.mem_alloc()
    assert ed25519.verify(pk, sig, msg)
    gc.collect()
    after = gc.mem_alloc()
    t = time.ticks_us()
    SHA512(msg).digest()
    sha_us = time.ticks_diff(time.ticks_us(), t)
    print("FIGURE ed25519 verify 1500 B: median %d us (min %d, max %d); sha512 of 1500 B %d us; "
          "live heap %d B before, %d B after" % (times[2], times[0], times[4], sha_us, before, after))
    assert after - before < 512
