"""The TLS client context of the MQTT link, verifying the broker with the CA from config
(`mqtt.ca`, a file in flash: PEM as `campusfleet certs init` writes it, or DER). A module
of its own so that a node without TLS never loads it (heap: docs/performance.md)."""
import binascii
import ssl


def client_context(path):
    """MicroPython's Mbed TLS takes one DER certificate, so PEM is decoded here."""
    if not path:
        raise OSError("TLS: no CA in config (mqtt.ca)")
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        raise OSError("TLS: cannot read CA file %s" % path)
    begin = data.find(b"-----BEGIN CERTIFICATE-----")
    if begin >= 0:
        end = data.find(b"-----END", begin + 27)
        try:
            data = binascii.a2b_base64(data[begin + 27:end])
        except ValueError:
            raise OSError("TLS: CA file %s is not a PEM certificate" % path)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    # The unix port's default is CERT_NONE: require a verified server. (verify_mode is in
    # MicroPython's ssl docs; the esp32 stubs lack it.)
    ctx.verify_mode = ssl.CERT_REQUIRED  # type: ignore[attr-defined]
    try:
        ctx.load_verify_locations(cadata=data)
    except ValueError as e:
        raise OSError("TLS: CA file %s: %s" % (path, e))
    return ctx
