"""`make audit`: pip-audit over the venv, with an honest summary of what could be checked.

pip-audit prints "No known vulnerabilities found" even when it could look up no package at all
(a registry mirror without its vulnerability data); this says how many were really audited.
Exits 1 on any known vulnerability, 0 otherwise.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

PIP_AUDIT = Path(sys.executable).with_name("pip-audit")


def main() -> int:
    run = subprocess.run(  # noqa: S603 - our own venv's pip-audit, fixed arguments
        [str(PIP_AUDIT), "--skip-editable", "--progress-spinner", "off", "--format", "json"],
        capture_output=True,
        text=True,
        check=False,
    )
    try:
        report = json.loads(run.stdout)
    except json.JSONDecodeError:
        sys.stderr.write(run.stdout + run.stderr)
        return run.returncode or 1
    dependencies = report.get("dependencies", [])
    skipped = [dep for dep in dependencies if dep.get("skip_reason")]
    vulnerable = [dep for dep in dependencies if dep.get("vulns")]
    for dep in vulnerable:
        ids = ", ".join(vuln["id"] for vuln in dep["vulns"])
        print(f"VULNERABLE {dep['name']} {dep['version']}: {ids}")
    audited = len(dependencies) - len(skipped)
    print(
        f"pip-audit: {audited} packages audited, {len(vulnerable)} with known vulnerabilities, "
        f"{len(skipped)} not audited"
    )
    if skipped and not audited:
        print(
            "WARNING: no package could be looked up (the vulnerability service is unreachable "
            "from here); nothing was audited. Run `make audit` where it is reachable."
        )
    return 1 if vulnerable else 0


if __name__ == "__main__":
    sys.exit(main())
