#!/usr/bin/env python3
"""Seeds for policy_yaml and meshfile: the YAML string literals of the
project's own tests and examples (valid and deliberately broken ones)."""
import hashlib, pathlib, re, sys

root = pathlib.Path(sys.argv[1]).resolve()
out = pathlib.Path(sys.argv[2])
lit = re.compile(r'r(#*)"(.*?)"\1|"((?:[^"\\]|\\.)*)"', re.S)

def unescape(s):
    s = re.sub(r'\\\n\s*', '', s)
    return s.replace('\\n', '\n').replace('\\t', '\t').replace('\\"', '"').replace('\\\\', '\\')

def save(kind, text):
    d = out / kind
    d.mkdir(parents=True, exist_ok=True)
    (d / hashlib.sha1(text.encode()).hexdigest()).write_text(text)

for path in list(root.glob('**/*.rs')) + list(root.glob('**/*.yaml')):
    rel = path.relative_to(root).parts
    if rel[0] in ('target', 'fuzz', '.git'):
        continue
    src = path.read_text(errors='replace')
    texts = [src] if path.suffix == '.yaml' else [
        m.group(2) if m.group(2) is not None else unescape(m.group(3)) for m in lit.finditer(src)]
    for t in texts:
        if 'kind: LocalMesh' in t:
            save('meshfile', t)
        elif re.search(r'kind: (HTTPRoute|TrafficPolicy|AccessPolicy)', t) and 'CustomResourceDefinition' not in t:
            save('policy_yaml', t)
