"""Partner data: library reading and checks, scaffold splits, demo partner files."""

from molfed.data.demo import DEMO_PARTNERS, write_demo_partners
from molfed.data.library import Library, Reject, TaskType, file_digest, read_library, write_rejects
from molfed.data.split import Split, murcko_scaffold, scaffold_split

__all__ = [
    "DEMO_PARTNERS",
    "Library",
    "Reject",
    "Split",
    "TaskType",
    "file_digest",
    "murcko_scaffold",
    "read_library",
    "scaffold_split",
    "write_demo_partners",
    "write_rejects",
]
