"""Request schemas (marshmallow): unknown fields are refused, every error names its field."""

from __future__ import annotations

from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates_schema

from shared.policy import GUARDRAILS, MINIMUMS

METHOD_ID = r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$"
# A Docker image reference: [registry[:port]/]path[:tag][@sha256:digest], lower-case path parts.
# As in Docker, a first part is a registry only if it has a dot or a port, or is "localhost".
IMAGE_REF = (
    r"^(?:(?:localhost|[a-zA-Z0-9-]+(?:\.[a-zA-Z0-9-]+)+)(?::[0-9]{1,5})?/"
    r"|[a-zA-Z0-9-]+:[0-9]{1,5}/)?"
    r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[a-f0-9]{64})?$"
)


class ResourcesSchema(Schema):
    """Optional per-run limits; each is checked against the guardrails."""

    class Meta:
        unknown = RAISE

    cpu = fields.Float(validate=validate.Range(min=MINIMUMS.cpu, max=GUARDRAILS.cpu))
    memoryMb = fields.Integer(
        validate=validate.Range(min=MINIMUMS.memory_mb, max=GUARDRAILS.memory_mb)
    )
    timeoutS = fields.Integer(
        validate=validate.Range(min=MINIMUMS.timeout_s, max=GUARDRAILS.timeout_s)
    )
    logCapMb = fields.Integer(
        validate=validate.Range(min=MINIMUMS.log_cap_mb, max=GUARDRAILS.log_cap_mb)
    )


class CallbackSchema(Schema):
    """Where to POST the run's state changes: ``{url, secretRef}`` or ``{endpoint}`` (issue 9)."""

    class Meta:
        unknown = RAISE

    url = fields.String(validate=validate.Length(min=1, max=2048))
    secretRef = fields.String(validate=validate.Length(min=1, max=512))
    endpoint = fields.String(validate=validate.Length(min=1, max=128))

    @validates_schema
    def _one_form(self, data: dict[str, object], **_: object) -> None:
        if "endpoint" in data:
            if "url" in data or "secretRef" in data:
                raise ValidationError("give either endpoint or url and secretRef", "endpoint")
        elif "url" not in data or "secretRef" not in data:
            raise ValidationError("url and secretRef are both required", "url")


class GitHubSchema(Schema):
    """The commit whose status follows the run (issue 9)."""

    class Meta:
        unknown = RAISE

    repository = fields.String(
        required=True,
        validate=validate.Regexp(
            r"^[A-Za-z0-9_.-]{1,100}/[A-Za-z0-9_.-]{1,100}$", error="must be owner/name"
        ),
    )
    sha = fields.String(
        required=True,
        validate=validate.Regexp(
            r"^[0-9a-f]{40}([0-9a-f]{24})?$", error="must be a full commit sha"
        ),
    )
    context = fields.String(validate=validate.Length(min=1, max=255))
    targetUrl = fields.Url(schemes={"https", "http"}, validate=validate.Length(max=2048))


def storable_text(value: str) -> None:
    """Refuse text Postgres cannot store (a NUL character or a lone surrogate)."""
    if not _storable(value):
        raise ValidationError("must not contain NUL characters or lone surrogates")


def _storable(value: object) -> bool:
    """Return whether every string in ``value`` (keys too) can be stored by Postgres."""
    if isinstance(value, str):
        if "\x00" in value:
            return False
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return False
        return True
    if isinstance(value, dict):
        return all(_storable(k) and _storable(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return all(_storable(v) for v in value)
    return True


class RunRequestSchema(Schema):
    """The seed payload of ``POST /api/sandbox/runs``."""

    class Meta:
        unknown = RAISE

    personaId = fields.UUID(required=True)
    methodId = fields.String(
        required=True,
        validate=[
            validate.Length(max=128),
            validate.Regexp(METHOD_ID, error="must look like adapter.method"),
        ],
    )
    adapterImage = fields.String(
        required=True,
        validate=[
            validate.Length(max=255),
            validate.Regexp(IMAGE_REF, error="is not a valid image reference"),
        ],
    )
    input = fields.Dict(required=True, keys=fields.String())
    dryRun = fields.Boolean(load_default=False)
    resources = fields.Nested(ResourcesSchema)
    callback = fields.Nested(CallbackSchema)
    github = fields.Nested(GitHubSchema)

    @validates_schema
    def _storable_text(self, data: dict[str, object], **_: object) -> None:
        # Postgres text and jsonb cannot hold NUL characters or unpaired surrogates (found by
        # schemathesis: they were a 500); refuse them naming the field.
        for name, value in data.items():
            if not _storable(value):
                raise ValidationError("must not contain NUL characters or lone surrogates", name)


class RunGetQuerySchema(Schema):
    """Options of ``GET /api/sandbox/runs/<id>``."""

    class Meta:
        unknown = RAISE

    wait = fields.Float(
        load_default=0.0,
        validate=validate.Range(min=0, max=60),
        metadata={
            "description": "Seconds to hold the request until the run is over (long poll); "
            "the answer comes as soon as it ends, or with the current state when the time is up."
        },
    )


class LogsQuerySchema(Schema):
    """Paging of ``GET /api/sandbox/runs/<id>/logs``."""

    class Meta:
        unknown = RAISE

    after = fields.Integer(load_default=0, validate=validate.Range(min=0))
    limit = fields.Integer(load_default=500, validate=validate.Range(min=1, max=5000))
    stream = fields.String(validate=validate.OneOf(["stdout", "stderr"]))
    follow = fields.Boolean(load_default=True)
