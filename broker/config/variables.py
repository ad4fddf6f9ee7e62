"""Names of environment variables a configuration refers to: where a secret, a token or
the exporter's headers are, so that the file never holds them."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def variable_name(value: str) -> str:
    if not _NAME.match(value):
        raise ValueError(f"expected an environment variable name, got {value!r}")
    return value


VariableName = Annotated[str, AfterValidator(variable_name)]
"""``ORDERS_SECRET``: letters, digits and ``_``, not starting with a digit."""
