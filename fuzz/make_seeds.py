#!/usr/bin/env python3
"""Writes the seed corpus: fuzz/corpus/<target>/<name>.

kmauthtoken_merge inputs are `arbitrary`-encoded (arbitrary 1.5): the
`Input` struct of fuzz_targets/kmauthtoken_merge.rs, whose last field (the
caller's header) is the rest of the input. Field lengths are read from the
end of the data, contents and bools from the front; `encode` lays them out
that way. Re-run after changing `Input`:  python3 fuzz/make_seeds.py
"""
import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))


def encode(site, integration, user, extra, locale, caller: bytes) -> bytes:
    ops = [("str", site), ("str", integration), ("bool", user is not None)]
    if user is not None:
        ops.append(("str", user))
    for k, v in extra:
        ops += [("bool", True), ("str", k), ("str", v)]
    ops += [("bool", False), ("str", locale)]
    # The size of each length depends on how much data is left when it is
    # read (1 byte up to 256 left, else 2), so iterate to a fixed point.
    n = len(caller) + sum(1 if k == "bool" else 1 + len(v.encode()) for k, v in ops)
    for _ in range(10):
        front, back, left = b"", b"", n
        for kind, val in ops:
            if kind == "bool":
                front += bytes([1 if val else 0])
                left -= 1
                continue
            b = val.encode()
            if left <= 256:
                assert 1 < left and len(b) <= left - 1
                back = bytes([len(b)]) + back
                left -= 1
            else:
                most = left - 2
                assert len(b) <= most
                back = (bytes([len(b), 0]) if most < 256 else len(b).to_bytes(2, "big")) + back
                left -= 2
            front += b
            left -= len(b)
        data = front + caller + back
        if len(data) == n:
            return data
        n = len(data)
    raise ValueError("no fixed point")


INT = "cnVZcDRvaEtSK1BsTzRWa2VBd0ZqVW5hQWZaL3VCRmJ3T2lIbHRiPQ=="
USR = "dXNlclRva2VuLTE3MzI0MDAwMDArdm9yK2lE/Q=="

MERGE = {
    # A caller forging siteName and both tokens, plus kept and unknown fields.
    "forged_tokens": dict(
        site="ORACLE_KNOWLEDGE", integration=INT, user=USR,
        extra=[("interfaceId", "1"), ("appId", "kmproxy")], locale="en_US",
        caller=json.dumps({
            "siteName": "EVIL_SITE", "integrationUserToken": "forged+int/token==",
            "userToken": "forged-user", "localeId": "fr_FR", "knowledgeInteractionId": "KI-0001",
            "interactionIdGenerated": "true", "other": "dropped"}, separators=(",", ":"))),
    # What a browser widget sends: every kept field.
    "browser_app": dict(
        site="ORACLE_KNOWLEDGE", integration=INT, user=None,
        extra=[("querySource", "kmproxy")], locale="en_US",
        caller='{"siteName":"ORACLE_KNOWLEDGE","interfaceId":"1","localeId":"en_US",'
               '"referrer":"https://support.example.com/answers","querySource":"SEARCH",'
               '"appId":"helpcenter","captureAnalytics":"true",'
               '"knowledgeInteractionId":"06c7c2e8-6d1b-4a8e-9c77-0f0e1a2b3c4d"}'),
    # What Oracle's own clients send: typed values, billing fields, an empty userToken.
    "typed_oracle_client": dict(
        site="ORACLE_KNOWLEDGE", integration=INT, user=USR,
        extra=[("interfaceId", "1")], locale="en_US",
        caller='{"interfaceId":1,"captureAnalytics":true,"billableSessionId":"b1",'
               '"requiresBillable":false,"clientIP":"10.0.0.1","userToken":"","querySource":1.50}'),
    # nulls are kept as the caller's null; escapes and raw non-ASCII in values.
    "nulls_unicode": dict(
        site="SITE", integration="INT+/=", user="USR", extra=[("localeId", "de_DE")],
        locale="en_US",
        caller='{"referrer":"https://ex\\u00e4mple.com/\u2603?q=\\"x\\"","appId":null,'
               '"localeId":null,"captureAnalytics":"false","userToken":null}'),
    "locale_only": dict(site="S", integration="I", user=None, extra=[], locale="en_GB",
                        caller='{"localeId":"ja_JP"}'),
    "empty_object": dict(site="ORACLE_KNOWLEDGE", integration=INT, user=USR, extra=[],
                         locale="en_US", caller="{}"),
    "refused_not_string": dict(site="S", integration="I", user=None, extra=[], locale="en_US",
                               caller='{"localeId":{"a":1},"appId":7}'),
    "refused_interaction_id": dict(site="S", integration="I", user=None, extra=[],
                                   locale="en_US",
                                   caller='{"knowledgeInteractionId":"' + "k" * 65 + '"}'),
    # Over MAX_CALLER_LEN (8 KiB); also lifts libFuzzer's -max_len past it.
    "refused_too_long": dict(site="S", integration="I", user=None, extra=[], locale="en_US",
                             caller='{"localeId":"en_US"' + " " * 8200 + "}"),
    "refused_not_json": dict(site="S", integration="I", user="U", extra=[], locale="en_US",
                             caller="integrationUserToken=forged"),
}

SESSION = {
    # Knowledge Advanced's JSON error body for an expired session.
    "json_session_expired": '{"error":{"title":"Session Token has expired","errorPath":null,'
                            '"errorCode":"OK-SESSION0003","type":"VALIDATION","detail":null},'
                            '"errorDetails":[]}',
    # The same as XML (Accept: application/xml).
    "xml_session_expired": '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
                           "<error><title>Session Token has expired</title>"
                           "<errorCode>OK-SESSION0003</errorCode><type>VALIDATION</type>"
                           "</error>",
    # Search's variant, top-level code.
    "json_gen0003": '{"errorCode":"OK-GEN0003","title":"Invalid session","type":"SEARCH"}',
    # Errors that are not session errors.
    "json_other_error": '{"error":{"title":"Access denied","errorPath":"/content",'
                        '"errorCode":"OK-SEC0012","type":"AUTHORIZATION","detail":null},'
                        '"errorDetails":[{"title":"x","errorCode":"OK-SESSION0001"}]}',
    "xml_padded_code": "<error>\n  <errorCode>\n    OK-SESSION0001\n  </errorCode>\n</error>\n",
    "html_gateway": "<html><head><title>502 Bad Gateway</title></head>"
                    "<body>OK-SESSION0003</body></html>",
    "json_code_in_title": '{"title":"OK-SESSION0003","status":401}',
    "json_escaped_code": '{"error":{"errorCode":"OK-SESSION\\u00300003"}}',
    # The other JSON shapes: search / Customer Portal, and error as a list.
    "json_errors_list": '{"errors":[{"code":"OK-GEN0003","title":"The token is invalid or has expired"}]}',
    "json_error_list": '{"error":[{"code":"OK-GEN0003"}]}',
    # Caller text echoed by an error page and a JSON title.
    "html_echo": "<!doctype html><html><body><p>The query could not be read: "
                 "q=<errorCode>OK-SESSION0003</errorCode></p></body></html>",
    "json_echo": '{"title":"No results for q=<errorCode>OK-SESSION0003</errorCode>","items":[]}',
}

# session_error_detect's first byte: content type (low two bits: none, JSON,
# XML, HTML) and coding (bits 4-5: identity, gzip, deflate, br).
CHOICE = {"json": 1, "xml": 2, "html": 3}


def session_seed(name, body):
    kind = name.split("_")[0]
    return bytes([CHOICE.get(kind, 0)]) + body.encode()


def main():
    for target, seeds in (("kmauthtoken_merge", MERGE), ("session_error_detect", SESSION)):
        d = os.path.join(HERE, "corpus", target)
        os.makedirs(d, exist_ok=True)
        if target == "session_error_detect":
            # Compressed seeds: the same documents gzip- and deflate-encoded (no brotli in the standard library).
            import gzip, zlib
            for name in ("json_session_expired", "json_errors_list", "xml_session_expired"):
                body = seeds[name].encode()
                kind = CHOICE[name.split("_")[0]]
                for coding, enc in ((1, gzip.compress(body)), (2, zlib.compress(body))):
                    with open(os.path.join(d, f"{name}_{['', 'gzip', 'deflate'][coding]}"), "wb") as f:
                        f.write(bytes([kind | coding << 4]) + enc)
        for name, s in seeds.items():
            if target == "kmauthtoken_merge":
                data = encode(s["site"], s["integration"], s["user"], s["extra"], s["locale"],
                              s["caller"].encode())
            else:
                data = session_seed(name, s)
            with open(os.path.join(d, name), "wb") as f:
                f.write(data)


if __name__ == "__main__":
    main()
