"""``python -m devstack up | status | down``: the same commands as ``tenantctl dev``."""

from __future__ import annotations

from starter.dev_commands import dev_app

if __name__ == "__main__":
    dev_app(prog_name="python -m devstack")
