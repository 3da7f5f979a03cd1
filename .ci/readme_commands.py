"""Print the README's set-up commands, one a line: the ```bash blocks of its "## Set up" section, in order."""

import re
import sys
from pathlib import Path

text = Path(sys.argv[1]).read_text(encoding="utf-8")
section = re.search(r"^## Set up\n(.*?)(?=^## )", text, flags=re.M | re.S)
if section is None:
    sys.exit("README has no '## Set up' section")
blocks = re.findall(r"^```bash\n(.*?)^```", section.group(1), flags=re.M | re.S)
commands = [" ".join(line.strip().rstrip("\\").strip() for line in b.strip().splitlines()) for b in blocks]
if len(commands) != 2:
    sys.exit(f"README's '## Set up' section must hold exactly two bash blocks, found {len(commands)}")
print("\n".join(commands))
