"""Pushes an artifact with a subject to Berth with the oras Python SDK,
then pulls it back. Arguments: HOST REPO SUBJECT_DIGEST SUBJECT_SIZE WORKDIR.
Prints one JSON line describing what happened."""
import json
import os
import sys

import oras.client
import oras.oci

host, repo, subject_digest, subject_size, workdir = sys.argv[1:6]
client = oras.client.OrasClient(hostname=host, insecure=True, auth_backend="basic")
path = os.path.join(workdir, "sbom.json")
with open(path, "w") as f:
    json.dump({"spdxVersion": "SPDX-2.3", "name": "berth-test"}, f)
subject = oras.oci.Subject(
    mediaType="application/vnd.oci.image.manifest.v1+json",
    digest=subject_digest,
    size=int(subject_size),
)
os.chdir(workdir)
pushed = client.push(
    target=f"{host}/{repo}:sbom",
    files=["sbom.json"],
    subject=subject,
    manifest_annotations={"org.example.kind": "sbom"},
)
out = os.path.join(workdir, "pulled")
files = client.pull(target=f"{host}/{repo}:sbom", outdir=out)
with open(os.path.join(out, "sbom.json")) as f:
    pulled = json.load(f)
print(json.dumps({"status": pushed.status_code, "files": len(files), "name": pulled["name"]}))
