"""The HTTP service: health, model, predictions, and bad input answered with a 4xx while the
service stays up."""

from __future__ import annotations

import base64
import io
import struct
import subprocess
import sys
import time
import zlib

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from adformer.cli import main
from adformer.deploy.service import create_app
from adformer.runtime import load


def _ready(client: TestClient) -> TestClient:
    for _ in range(200):
        if client.get("/health/ready").status_code == 200:
            return client
        time.sleep(0.05)
    raise AssertionError(client.get("/health/ready").json())


@pytest.fixture(scope="module")
def client(uniad_export):
    with TestClient(create_app(uniad_export, max_upload_mb=0.5)) as client:
        yield _ready(client)


def _files(paths):
    return [("image", (p.name, p.read_bytes(), "image/png")) for p in paths]


def _bomb() -> bytes:
    """A valid PNG whose header claims 30,000 × 30,000 pixels."""
    buffer = io.BytesIO()
    Image.new("L", (1, 1)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    data[16:24] = struct.pack(">II", 30_000, 30_000)  # IHDR width, height
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))  # IHDR's CRC
    return bytes(data)


def test_health_and_model(client, uniad_export):
    assert client.get("/health/live").json() == {"status": "alive"}
    assert client.get("/health/ready").json() == {"status": "ready"}
    info = client.get("/v1/model").json()
    model = load(uniad_export).model()
    assert info["method"] == "uniad" and info["backend"] == "onnx"
    assert info["categories"] == model.categories
    assert info["thresholds"] == {c: model.threshold_ for c in model.categories}
    assert "/v1/predict" in client.get("/openapi.json").json()["paths"]
    assert client.get("/docs").status_code == 200


def test_predict_several_images_with_maps(client, uniad_export, synthetic_root):
    paths = sorted((synthetic_root / "grating" / "test").rglob("*.png"))[:3]
    response = client.post("/v1/predict", files=_files(paths))
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    expected = load(uniad_export).predict(paths)
    assert [r["filename"] for r in results] == [p.name for p in paths]
    assert np.allclose([r["score"] for r in results], expected.scores, rtol=1e-5)
    assert [r["anomalous"] for r in results] == expected.anomalous.tolist()
    for r in results:
        assert r["anomalous"] == (r["score"] > r["threshold"])
        overlay = Image.open(io.BytesIO(base64.b64decode(r["overlay"].split(",", 1)[1])))
        assert overlay.size == Image.open(paths[0]).size
        assert r["map"].startswith("data:image/png;base64,")
    lean = client.post("/v1/predict", files=_files(paths[:1]), data={"maps": "false"}).json()
    assert "map" not in lean["results"][0] and "overlay" not in lean["results"][0]


@pytest.mark.parametrize(
    "upload, status, message",
    [
        (("notes.png", b"this is text", "image/png"), 415, "not a readable image"),
        (("empty.png", b"", "image/png"), 415, "empty"),
        (("bomb.png", _bomb(), "image/png"), 413, "pixels"),
        (("big.png", b"\0" * 600_000, "image/png"), 413, "limit"),
    ],
)
def test_bad_uploads_are_4xx_and_the_service_stays_up(
    client, synthetic_root, upload, status, message
):
    response = client.post("/v1/predict", files=[("image", upload)])
    assert response.status_code == status and message in response.json()["detail"]
    good = sorted((synthetic_root / "grating" / "test").rglob("*.png"))[:1]
    assert client.post("/v1/predict", files=_files(good)).status_code == 200


def test_unknown_category_and_missing_image(client, synthetic_root):
    good = sorted((synthetic_root / "grating" / "test").rglob("*.png"))[:1]
    response = client.post("/v1/predict", files=_files(good), data={"category": "screws"})
    assert response.status_code == 404 and "screws" in response.json()["detail"]
    assert client.post("/v1/predict", data={"category": "grating"}).status_code == 422


def test_a_run_is_served_with_torch(fitted_uniad, synthetic_root):
    detector, run = fitted_uniad
    paths = sorted((synthetic_root / "dots" / "test").rglob("*.png"))[:2]
    with TestClient(create_app(run)) as client:
        info = _ready(client).get("/v1/model").json()
        assert info["backend"] == "torch" and info["categories"] == detector.categories_
        results = client.post("/v1/predict", files=_files(paths)).json()["results"]
    assert np.allclose([r["score"] for r in results], detector.predict(paths).scores, rtol=1e-5)


def test_a_bad_source_is_not_ready_and_says_why(tmp_path, capsys):
    with TestClient(create_app(tmp_path)) as client:
        for _ in range(100):
            response = client.get("/health/ready")
            if "failed" in response.json()["detail"]:
                break
            time.sleep(0.05)
        assert response.status_code == 503 and "not an adformer bundle" in response.json()["detail"]
        assert client.get("/health/live").status_code == 200
    assert main(["serve", str(tmp_path)]) == 2  # the CLI refuses before starting a server
    assert "not an adformer bundle" in capsys.readouterr().err


def test_an_export_is_served_without_torch(uniad_export, synthetic_root):
    image = sorted((synthetic_root / "grating" / "test").rglob("*.png"))[0]
    script = (
        "import sys, time\n"
        "sys.modules['torch'] = None\n"  # any `import torch` now raises
        "from fastapi.testclient import TestClient\n"
        "from adformer.deploy.service import create_app\n"
        "with TestClient(create_app(sys.argv[1])) as client:\n"
        "    while client.get('/health/ready').status_code != 200: time.sleep(0.05)\n"
        "    files = [('image', ('a.png', open(sys.argv[2], 'rb').read(), 'image/png'))]\n"
        "    print(client.post('/v1/predict', files=files).json()['results'][0]['score'])\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(uniad_export), str(image)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert np.isclose(float(out.stdout), load(uniad_export).predict([image]).scores[0], rtol=1e-6)
