"""Ready-to-run quick-start snippets (curl, Python with openai or httpx, JavaScript fetch) for
embeddings, analyze and compare, with this server's address and the caller's key filled in.

The snippets are plain text rendered by the templates (autoescaped); with no key at hand (the
empty dashboard) they read it from the DUPIFY_API_KEY environment variable instead.
"""

from __future__ import annotations

from dataclasses import dataclass

ENV_KEY = "DUPIFY_API_KEY"


@dataclass(frozen=True)
class Snippet:
    id: str  # element id, e.g. "qs-embeddings-curl"
    language: str  # shown on the tab: curl, Python (openai), ...
    code: str


@dataclass(frozen=True)
class EndpointSnippets:
    endpoint: str  # embeddings | analyze | compare
    title: str
    snippets: list[Snippet]


def _curl(base: str, key: str | None, path: str, parts: list[tuple[str, str]]) -> str:
    auth = f"Bearer {key}" if key else f"Bearer ${ENV_KEY}"
    lines = [f"curl {base}/v1/{path} \\", f'  -H "Authorization: {auth}" \\']
    lines += [f"  -F {name}=@{file} \\" for name, file in parts]
    lines[-1] = lines[-1].removesuffix(" \\")
    return "\n".join(lines)


def _python_key(key: str | None) -> str:
    return f'API_KEY = "{key}"' if key else f'API_KEY = os.environ["{ENV_KEY}"]'


def _httpx(base: str, key: str | None, path: str, parts: list[tuple[str, str]], show: str) -> str:
    opens = "".join(f'    "{name}": open("{file}", "rb"),\n' for name, file in parts)
    head = "import os\n\nimport httpx\n\n" if not key else "import httpx\n\n"
    return (
        f"{head}{_python_key(key)}\n"
        f"files = {{\n{opens}}}\n"
        "response = httpx.post(\n"
        f'    "{base}/v1/{path}",\n'
        '    headers={"Authorization": f"Bearer {API_KEY}"},\n'
        "    files=files,\n"
        "    timeout=60,\n"
        ")\n"
        "response.raise_for_status()\n"
        f"print({show})\n"
    )


def _openai(base: str, key: str | None, model: str) -> str:
    head = "import base64\nimport os\n" if not key else "import base64\n"
    return (
        f"{head}\nfrom openai import OpenAI\n\n"
        f"{_python_key(key)}\n"
        f'client = OpenAI(api_key=API_KEY, base_url="{base}/v1")\n'
        'with open("photo.jpg", "rb") as image:\n'
        '    data_uri = "data:image/jpeg;base64," + base64.b64encode(image.read()).decode()\n'
        f'result = client.embeddings.create(model="{model}", input=[data_uri])\n'
        "print(len(result.data[0].embedding), result.data[0].embedding[:4])\n"
    )


def _fetch(base: str, key: str | None, path: str, parts: list[tuple[str, str]]) -> str:
    key_line = f'const apiKey = "{key}";' if key else f"const apiKey = process.env.{ENV_KEY};"
    appends = "".join(
        f'form.append("{name}", new Blob([await readFile("{file}")]), "{file}");\n'
        for name, file in parts
    )
    return (
        "// Node 18+ (save as quickstart.mjs); in a browser, append a File from an <input>.\n"
        'import { readFile } from "node:fs/promises";\n\n'
        f"{key_line}\n"
        "const form = new FormData();\n"
        f"{appends}"
        f'const response = await fetch("{base}/v1/{path}", {{\n'
        '  method: "POST",\n'
        "  headers: { Authorization: `Bearer ${apiKey}` },\n"
        "  body: form,\n"
        "});\n"
        "console.log(response.status, await response.json());\n"
    )


def quick_start(base_url: str, key: str | None, model: str) -> list[EndpointSnippets]:
    """The snippets for the three main calls, against `base_url` (no trailing slash)."""
    base = base_url.rstrip("/")
    one = [("file", "photo.jpg")]
    two = [("a", "photo.jpg"), ("b", "other.jpg")]
    calls = [
        ("embeddings", "Embed an image", one, 'response.json()["data"][0]["embedding"][:4]'),
        ("analyze", "Analyse an image", one, 'response.json()["results"][0]["labels"]'),
        ("compare", "Compare two images", two, 'response.json()["verdict"]'),
    ]
    sections = []
    for path, title, parts, show in calls:
        snippets = [
            Snippet(f"qs-{path}-curl", "curl", _curl(base, key, path, parts)),
            Snippet(f"qs-{path}-httpx", "Python (httpx)", _httpx(base, key, path, parts, show)),
        ]
        if path == "embeddings":
            snippets.append(
                Snippet(f"qs-{path}-openai", "Python (openai)", _openai(base, key, model))
            )
        snippets.append(
            Snippet(f"qs-{path}-fetch", "JavaScript (fetch)", _fetch(base, key, path, parts))
        )
        sections.append(EndpointSnippets(path, title, snippets))
    return sections
