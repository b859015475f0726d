"""faceres converted to ONNX against the TF.js model itself, run by TensorFlow.js under node.

    python benchmarks/faceres_check.py --tfjs DIR [--images N] [--backend cpu|wasm] [--source TARBALL]

DIR is a folder where ``npm install @tensorflow/tfjs @tensorflow/tfjs-backend-wasm`` was run (a
temporary folder, never the repository). faceres must be installed (``--source`` installs it from
the ``npm pack`` tarball or a folder; see vision/faceres.py).

Printed: that no node, tensor or weight of the graph's other heads (age, gender, and the ``feats``
layer they share) is in the converted ONNX graph; for the chips of N LFW faces (dlib chips at 224,
as faceres_model cuts them), the largest absolute difference between the ONNX and TF.js
descriptors, raw and after L2-normalisation, and the smallest cosine between them; that
faceres_model's templates are the ONNX descriptors normalised; and ms per face at batch 32 for
faceres and for dlib's ResNet (both without flip, one network pass per chip) on this machine.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _data import require  # noqa: E402

from faceledger.vision import DlibResNetModel, FaceAnalyzer, read_image_file  # noqa: E402
from faceledger.vision.faceres import DESCRIPTOR, FACERES_SPEC, faceres_dir, faceres_model, install_faceres  # noqa: E402
from faceledger.vision.tfjs_graph import load_graph  # noqa: E402

RUNNER = r"""
const tf = require('@tensorflow/tfjs');
const fs = require('fs');
const path = require('path');

async function main() {
  const [modelJson, inputFile, count, outFile, backend] = process.argv.slice(2);
  if (backend === 'wasm') {
    const wasm = require('@tensorflow/tfjs-backend-wasm');
    wasm.setWasmPaths(path.dirname(require.resolve('@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm.wasm')) + '/');
  }
  await tf.setBackend(backend);
  await tf.ready();
  const model = JSON.parse(fs.readFileSync(modelJson));
  const folder = path.dirname(modelJson);
  const weightSpecs = [].concat(...model.weightsManifest.map((group) => group.weights));
  const data = Buffer.concat([].concat(...model.weightsManifest.map((group) => group.paths.map((p) => fs.readFileSync(path.join(folder, p))))));
  const weightData = data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength);
  const handler = { load: async () => ({ modelTopology: model.modelTopology, weightSpecs, weightData, format: model.format, signature: model.signature }) };
  const graph = await tf.loadGraphModel(handler);
  const raw = fs.readFileSync(inputFile);
  const input = new Float32Array(raw.buffer, raw.byteOffset, raw.byteLength / 4);
  const size = 224 * 224 * 3;
  const out = [];
  for (let i = 0; i < Number(count); i += 1) {
    const x = tf.tensor4d(input.slice(i * size, (i + 1) * size), [1, 224, 224, 3]);
    const y = graph.execute(x, '%DESCRIPTOR%');
    out.push(...(await y.data()));
    tf.dispose([x, y]);
  }
  fs.writeFileSync(outFile, Buffer.from(new Float32Array(out).buffer));
  console.log(`tfjs ${tf.version.tfjs}, backend ${tf.getBackend()}`);
}
main().catch((error) => { console.error(error); process.exit(1); });
"""


def face_chips(model, count: int) -> list[np.ndarray]:
    """Chips of the first face in every k-th LFW image until ``count`` chips."""
    paths = sorted(require("lfw").glob("*/*.jpg"))
    analyzer = FaceAnalyzer(model=model)
    chips = []
    for path in paths[:: max(1, len(paths) // (2 * count))]:
        faces = analyzer.analyze(read_image_file(path).pixels, embed=False)
        if faces:
            chips.append(faces[0].chip)
        if len(chips) == count:
            break
    return chips


def network_input(chips: list[np.ndarray]) -> np.ndarray:
    """What the spec says the network takes: BGR, less the channel means, NHWC float32."""
    batch = np.stack(chips)[..., ::-1].astype(np.float32)
    return np.ascontiguousarray(batch - np.array(FACERES_SPEC.mean, np.float32))


def tfjs_descriptors(tfjs: Path, inputs: np.ndarray, backend: str) -> tuple[np.ndarray, str]:
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary)
        (folder / "run.js").write_text(RUNNER.replace("%DESCRIPTOR%", DESCRIPTOR))
        inputs.tofile(folder / "input.f32")
        environment = {**os.environ, "NODE_PATH": str(tfjs / "node_modules")}
        command = ["node", str(folder / "run.js"), str(faceres_dir() / "faceres.json")]
        command += [str(folder / "input.f32"), str(len(inputs)), str(folder / "out.f32"), backend]
        done = subprocess.run(command, env=environment, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise SystemExit(f"node failed:\n{done.stderr[-2000:]}")
        return np.fromfile(folder / "out.f32", dtype=np.float32).reshape(len(inputs), -1), done.stdout.strip()


def check_heads(onnx_path: Path) -> None:
    import onnx

    graph = load_graph(faceres_dir() / "faceres.json")
    kept = {node.name for node in graph.upstream(DESCRIPTOR)}
    heads = set(graph.nodes) - kept
    model = onnx.load(str(onnx_path))
    names = {n.name for n in model.graph.node} | {i.name for i in model.graph.initializer}
    names |= {t for n in model.graph.node for t in [*n.input, *n.output]}
    leaked = {name for name in names if name.split("/")[0] in {h.split("/")[0] for h in heads}}
    leaked |= {name for name in names if "age" in name.lower() or "gender" in name.lower()}
    print(f"TF.js graph: {len(graph.nodes)} nodes, {len(kept)} upstream of {DESCRIPTOR}; not converted: {len(heads)}")
    print(f"  e.g. {', '.join(sorted(h for h in heads if graph.nodes[h].op != 'Const'))}")
    print(
        f"ONNX graph: {len(model.graph.node)} nodes, {len(model.graph.initializer)} weights; head names in it: {sorted(leaked) or 'none'}"
    )
    if leaked:
        raise SystemExit("a head leaked into the converted graph")


def ms_per_face(model, chips: list[np.ndarray], repeats: int = 3) -> float:
    model.embed(chips[:32])  # load and warm up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for first in range(0, len(chips), 32):
            model.embed(chips[first : first + 32])
        best = min(best, (time.perf_counter() - start) / len(chips) * 1000)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tfjs", type=Path, required=True)
    parser.add_argument("--images", type=int, default=50)
    parser.add_argument("--backend", choices=("cpu", "wasm"), default="cpu")
    parser.add_argument("--source", type=Path)
    args = parser.parse_args()
    if args.source:
        install_faceres(args.source)
    model = faceres_model(flip=False)
    check_heads(model.path)

    import onnxruntime

    chips = face_chips(model, args.images)
    inputs = network_input(chips)
    session = onnxruntime.InferenceSession(str(model.path), providers=["CPUExecutionProvider"])
    ours = session.run([DESCRIPTOR], {"input_1": inputs})[0]
    theirs, runtime = tfjs_descriptors(args.tfjs, inputs, args.backend)
    unit_ours = ours / np.linalg.norm(ours, axis=1, keepdims=True)
    unit_theirs = theirs / np.linalg.norm(theirs, axis=1, keepdims=True)
    print(f"{len(chips)} LFW chips; TF.js: {runtime}")
    print(f"  descriptor values: {np.abs(theirs).mean():.4f} mean absolute, {np.abs(theirs).max():.4f} largest")
    print(f"  max |ONNX - TF.js|, raw:           {np.abs(ours - theirs).max():.3g}")
    print(f"  max |ONNX - TF.js|, L2-normalised: {np.abs(unit_ours - unit_theirs).max():.3g}")
    print(f"  smallest cosine(ONNX, TF.js):      {np.min(np.sum(unit_ours * unit_theirs, axis=1)):.9f}")
    templates = model.embed(chips)
    print(f"  faceres_model templates vs normalised ONNX descriptors: {np.abs(templates - unit_ours).max():.3g}")

    dlib = DlibResNetModel(flip=False)
    print(f"ms per face, batch 32, {os.cpu_count()} cores (no flip; flip doubles it):")
    print(f"  faceres (224 px, MobileNet, 1024-d): {ms_per_face(model, face_chips(model, 64)):.1f}")
    print(f"  dlib ResNet (150 px, 128-d):         {ms_per_face(dlib, face_chips(dlib, 64)):.1f}")


if __name__ == "__main__":
    main()
