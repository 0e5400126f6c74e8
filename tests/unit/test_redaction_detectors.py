"""Detections added for issue 4 and the false positives they must not bring."""

from __future__ import annotations

import pytest

from shared.redaction import Redactor


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            "mysql --password s3cr3tpw --user root",
            "mysql --password [REDACTED:secret_assignment] --user root",
        ),
        (
            "run --db-password=foo1 --token-count 5",
            "run --db-password=[REDACTED:secret_assignment] --token-count 5",
        ),
        ("<password>hunter2</password>", "<password>[REDACTED:secret_assignment]</password>"),
        ("<apiKey> AbCd1234 </apiKey>", "<apiKey> [REDACTED:secret_assignment] </apiKey>"),
        ("password=p&ss;w,rd host=db", "password=[REDACTED:secret_assignment] host=db"),
        ("GET /x?token=abc123&page=2", "GET /x?token=[REDACTED:secret_assignment]&page=2"),
        ("Password=abc;Host=db", "Password=[REDACTED:secret_assignment];Host=db"),
        ("password: correcthorse", "password: [REDACTED:secret_assignment]"),
        (
            "Cookie: sid=abc123; theme=dark",
            "Cookie: sid=[REDACTED:cookie]; theme=[REDACTED:cookie]",
        ),
        (
            "Set-Cookie: sid=31d4d96e; Path=/; HttpOnly",
            "Set-Cookie: sid=[REDACTED:cookie]; Path=/; HttpOnly",
        ),
        ("signing_key: Zt8kQ2mN5pR7vX1yB3cD6fG9", "signing_key: [REDACTED:high_entropy]"),
        ("glpat-abcdefghij1234567890 x", "[REDACTED:gitlab_token] x"),
        ("hooks.slack.com/services/T0000/B0000/XXXXXXXXXXXXXXXXXXXXXXXX", "[REDACTED:slack_token]"),
        ("rk_live_4eC39HqLyjWDarjtT1zdp7dc", "[REDACTED:stripe_key]"),
        ("id abc8Q~abcdefghijklmnopqrstuvwxyz0123456 x", "id [REDACTED:azure_client_secret] x"),
        ("call 01 42 68 53 00 or 020 7946 0958", "call [REDACTED:phone] or [REDACTED:phone]"),
        (
            "https://x-access-token:s3cretPW@github.com/o/r",
            "https://x-access-token:[REDACTED:url_password]@github.com/o/r",
        ),
        (
            "-----BEGIN PGP PRIVATE KEY BLOCK-----\nlQdGBF\n-----END PGP PRIVATE KEY BLOCK----- ok",
            "[REDACTED:private_key] ok",
        ),
    ],
)
def test_new_detections(line: str, expected: str) -> None:
    assert Redactor().redact_text(line) == expected


@pytest.mark.parametrize(
    "line",
    [
        "token: expected 3 segments",
        "error: token: invalid signature",
        "Password: required field",
        "git clone git@github.com:org/repo.git",
        "PWD=/home/app password=${DB_PASSWORD} token=null secret: <redacted>",
        "idempotency_key=550e8400-e29b-41d4-a716-446655440000",
        "s3 key=uploads/2024/11/report-1234.pdf",
        "x-cookie: a=b",
        "ts 081109 211038 and 0000 0000",
        "--password-stdin given",
    ],
)
def test_prose_and_ids_are_kept(line: str) -> None:
    assert Redactor().redact_text(line) == line


def test_allow_list_keeps_exact_values() -> None:
    redactor = Redactor(allow=["AKIAIOSFODNN7EXAMPLE"])
    assert redactor.redact_text("AKIAIOSFODNN7EXAMPLE AKIAABCDEFGHIJKLMNOP") == (
        "AKIAIOSFODNN7EXAMPLE [REDACTED:aws_access_key_id]"
    )


def test_dotted_number_without_leading_digits_is_not_an_ip_and_does_not_crash() -> None:
    redactor = Redactor(keep_ip_addresses=False)
    assert redactor.redact_text("x .1.2.3 y") == "x .1.2.3 y"
    assert redactor.redact_text("at 10.1.2.3 now") == "at [REDACTED:ipv4] now"


# Forms found in the public test fixtures of gitleaks, detect-secrets, trufflehog, presidio and
# scrubadub (see tests/redaction_corpus/README.md).
@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            "curl -u elastic:P@ssw0rd$1 https://localhost:9200",
            "curl -u elastic:[REDACTED:secret_assignment] https://localhost:9200",
        ),
        ("  --user 'api:d2LkV78zLx!t' \\", "  --user 'api:[REDACTED:secret_assignment]' \\"),
        ("-u elastic:P@ssw0rd", "-u elastic:[REDACTED:secret_assignment]"),
        ("x\n\t-u elastic:P@ssw0rd", "x\n\t-u elastic:[REDACTED:secret_assignment]"),
        ('token := "Zf3D0LXCM3EIMbgJpUNnkRtO"', 'token := "[REDACTED:secret_assignment]"'),
        ('API_TOKEN ?= "Zf3D0LXCM3EIMbgJpUNnkRtO"', 'API_TOKEN ?= "[REDACTED:secret_assignment]"'),
        ('$apiToken .= "Zf3D0LXCM3"', '$apiToken .= "[REDACTED:secret_assignment]"'),
        ('some_dict["secret"] = "s3cr3t!"', 'some_dict["secret"] = "[REDACTED:secret_assignment]"'),
        ('apikey = @"s3cr3t!"', 'apikey = @"[REDACTED:secret_assignment]"'),
        ('private_key "s3cr3t!";', 'private_key "[REDACTED:secret_assignment]";'),
        (
            '{ "AccountKey", "8jqRVtXUWiEthgIhR+dFwrB8gh3lFuquvJQ1v4eabObIj7okI1cZIuzY8zZ" }',
            '{ "AccountKey", "[REDACTED:azure_storage_key]" }',
        ),
        (
            "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0",
            "[REDACTED:jwt]",
        ),
        ("call 1-312-515-2239 or 09-7625400", "call [REDACTED:phone] or [REDACTED:phone]"),
        ("ssn 078 05 1123 and 109.99.6000", "ssn [REDACTED:ssn] and [REDACTED:ssn]"),
        (
            "uatp 122000000000003 maestro 6759649826438453",
            "uatp [REDACTED:card] maestro [REDACTED:card]",
        ),
        ("iban VG96 VPVG 0000 0123 4567 8901 X in", "iban [REDACTED:iban] X in"),
    ],
)
def test_fixture_forms_are_masked(line: str, expected: str) -> None:
    assert Redactor().redact_text(line) == expected


@pytest.mark.parametrize(
    "line",
    [
        "key = AKIAXXXXXXXXXXXXXXXX",
        "ghp_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
        "xoxe.xoxp-1-SlackAppConfigurationAccessTokenHere",
        '"token4": "xoxp-572370529330-573807301142-572331691188-####################"',
        'curl -u "${username}":"${password}"',
        "docker run -u 1000:1000 app",
        "docker exec -u www-data:www-data web php occ",
        "curl --user neo4j:[PASSWORD] http://[IP]:7474/db/data/",
        'public_key = "9Cnzj4p4WGeKLs1Pt8QuKUpRKfFLfRYC9AIKjbJTWit"',
        '\t"key_vault_name": "web21prqodx24021",',
        'const keyStr = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"',
        "X-MS-Exchange-Organization-AuthSource: sm02915.int.contoso.com",
        "login(username=username, password=password)",
        "apiKey: this.apiKey,",
        'my_password = "fakesecret"',
        "PuttyPassword=0",
        "eyJAAAA.eyJBBB",
        '  -H "Authorization: Bearer $API_KEY" \\',
        "AccountKey=storageaccountkeybase64encoded;EndpointSuffix=core.windows.net",
    ],
)
def test_fixture_false_positives_are_kept(line: str) -> None:
    assert Redactor().redact_text(line) == line
