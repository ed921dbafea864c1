"""The zero-shot options of `/v1/analyze` (`labels_model`, `candidate_labels`), which its
request and form schemas (api.schemas.AnalyzeOptions) inherit."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, Field, field_validator

MAX_CANDIDATE_LABELS = 64
MAX_LABEL_CHARS = 200
CandidateLabel = Annotated[str, Field(min_length=1, max_length=MAX_LABEL_CHARS)]


class ZeroShotOptions(BaseModel):
    labels_model: str | None = Field(
        None,
        description="A model with the text modality (see /v1/models): `labels` are then its "
        "zero-shot scores over `candidate_labels` or the operator's label set.",
    )
    candidate_labels: list[CandidateLabel] | None = Field(
        None,
        min_length=1,
        max_length=MAX_CANDIDATE_LABELS,
        description=f"1..{MAX_CANDIDATE_LABELS} labels of at most {MAX_LABEL_CHARS} characters "
        "each for `labels_model`; a comma-separated string works too. Each is billed as one "
        "image.",
    )

    @field_validator("candidate_labels", mode="before")
    @classmethod
    def _split_comma_separated_labels(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value
