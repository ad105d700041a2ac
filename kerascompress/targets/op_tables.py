"""Which operators an accelerator's compiler maps to it: its published op table.

A compiled accelerator (the Edge TPU) runs only the operators in its table; the others
fall back to the host CPU. Tables live next to the profiles
(configs/targets/op_tables/<arch>.yaml), keyed by TFLite builtin operator name, each row
with the table's limitations and the copy of the table it was read in (null when the row
was not read in any copy and must be confirmed).
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import yaml

from kerascompress.errors import ConfigError
from kerascompress.targets.profiles import targets_dir


@dataclasses.dataclass(frozen=True)
class OpRow:
    limitations: str
    row_read_in: Optional[str]  # URL of the copy of the table the row was read in; None = unverified

    @property
    def verified(self) -> bool:
        return self.row_read_in is not None


@dataclasses.dataclass(frozen=True)
class OpTable:
    name: str
    source: str
    ops: dict[str, OpRow]

    def row(self, op: str) -> Optional[OpRow]:
        return self.ops.get(op)


def op_table(arch: str) -> Optional[OpTable]:
    """The op table of targets with this ``arch`` (e.g. "edgetpu"), None when there is none."""
    path = targets_dir() / "op_tables" / f"{arch}.yaml"
    if not path.is_file():
        return None
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        ops = {str(k): OpRow(str(v["limitations"]), v.get("row_read_in")) for k, v in data["ops"].items()}
        return OpTable(name=str(data["name"]), source=str(data["source"]), ops=ops)
    except (OSError, yaml.YAMLError, KeyError, TypeError, AttributeError) as err:
        raise ConfigError(f"{path}: not a valid op table ({err}); each op needs 'limitations' and 'row_read_in'") from err
