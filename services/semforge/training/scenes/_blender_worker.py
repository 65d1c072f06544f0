"""Blender side of the render pipeline: runs inside a Python that has ``bpy``.

Started by :mod:`semforge.training.scenes.runner` as a long-lived worker process
(``python -m semforge.training.scenes._blender_worker``): it reads one JSON job per line
on stdin (``{"spec": {...}, "out": DIR}``), builds the scene, drops the
particles as rigid bodies, renders the exact height (Cycles Z pass), instance
ids (object-index pass) and Freestyle borders, writes ``DIR/raw.npz`` and
``DIR/poses.json``, and answers one line ``SEMFORGE-DONE {...}`` or
``SEMFORGE-FAIL {...}``.  Blender's own chatter goes to stderr/stdout freely;
only those marker lines are protocol.  Imports numpy, bpy and the numpy-only
scene modules, nothing else of semforge.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback

import numpy as np

import bpy  # noqa: E402  (only importable inside a Blender Python)

from semforge.training.scenes.shapes import collision_shape, make_shape
from semforge.training.scenes.spec import sample_particles, spec_from_dict

DONE, FAIL = "SEMFORGE-DONE", "SEMFORGE-FAIL"


def _read_exr(path: str) -> dict:
    """Channels of a multilayer EXR as float32 arrays (OpenEXR's Python bindings)."""
    import OpenEXR  # installed beside bpy by `make setup-render`

    out = {}
    with OpenEXR.File(path, separate_channels=True) as f:
        for part in f.parts:
            for name, ch in part.channels.items():
                out[name] = np.asarray(ch.pixels, np.float32)
    return out


def _mesh_object(name: str, verts, faces):
    mesh = bpy.data.meshes.new(name)
    mesh.from_pydata([tuple(v) for v in verts], [], [tuple(int(i) for i in f) for f in faces])
    mesh.update()
    ob = bpy.data.objects.new(name, mesh)
    bpy.context.scene.collection.objects.link(ob)
    return ob


def _box(name: str, size, location):
    sx, sy, sz = (s / 2 for s in size)
    verts = [(x, y, z) for x in (-sx, sx) for y in (-sy, sy) for z in (-sz, sz)]
    faces = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
    mesh = bpy.data.meshes.new(name)
    mesh.from_pydata(verts, [], faces)
    ob = bpy.data.objects.new(name, mesh)
    ob.location = location
    bpy.context.scene.collection.objects.link(ob)
    return ob


def _add_rigid(objects, kind: str) -> None:
    bpy.ops.object.select_all(action="DESELECT")
    for ob in objects:
        ob.select_set(True)
    bpy.context.view_layer.objects.active = objects[0]
    bpy.ops.rigidbody.objects_add(type=kind)


def build_and_simulate(spec) -> tuple[list, float, dict]:
    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    particles = sample_particles(spec)
    unit = float(np.median([p.size_nm for p in particles]))  # 1 Blender unit = median size
    holder = spec.holder_nm / unit
    timings = {}
    t0 = time.perf_counter()
    floor = _box("holder", (holder, holder, 1.0), (0, 0, -0.5))
    top = max(p.start_location_nm[2] for p in particles) / unit + 4
    walls = [_box(f"wall{i}", size, loc) for i, (size, loc) in enumerate([
        ((0.5, holder + 1, top), (-(holder + 0.5) / 2, 0, top / 2)),
        ((0.5, holder + 1, top), ((holder + 0.5) / 2, 0, top / 2)),
        ((holder + 1, 0.5, top), (0, -(holder + 0.5) / 2, top / 2)),
        ((holder + 1, 0.5, top), (0, (holder + 0.5) / 2, top / 2))])]
    obs = []
    for p in particles:
        m = make_shape(p.shape, p.size_nm, p.aspect)
        ob = _mesh_object(f"p{p.id}", m.vertices / unit, m.faces)
        ob.rotation_mode = "QUATERNION"
        ob.rotation_quaternion = p.start_rotation
        ob.location = tuple(c / unit for c in p.start_location_nm)
        ob.pass_index = p.id
        obs.append(ob)
    if scene.rigidbody_world is None:
        bpy.ops.rigidbody.world_add()
    world = scene.rigidbody_world
    world.substeps_per_frame = 6
    world.solver_iterations = 10
    world.point_cache.frame_start = 1
    world.point_cache.frame_end = spec.frames
    _add_rigid([floor] + walls, "PASSIVE")
    _add_rigid(obs, "ACTIVE")
    for ob in [floor] + walls:
        ob.rigid_body.friction = 0.8
        ob.rigid_body.collision_margin = 0.0
        ob.hide_render = True
    for p, ob in zip(particles, obs):
        rb = ob.rigid_body
        rb.collision_shape = collision_shape(p.shape)
        rb.mass = max((p.size_nm / unit) ** 3, 0.05)
        rb.friction = 0.7
        rb.restitution = 0.0
        rb.linear_damping = 0.5
        rb.angular_damping = 0.7
        rb.collision_margin = 0.01
    timings["build_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    before = None
    for f in range(1, spec.frames + 1):
        scene.frame_set(f)
        if f == spec.frames - 5:
            before = np.array([ob.matrix_world.translation[:] for ob in obs])
    after = np.array([ob.matrix_world.translation[:] for ob in obs])
    # residual motion over the last 5 frames: how settled the pile is
    timings["residual_nm_per_frame"] = float(np.abs(after - before).max() * unit / 5) if before is not None else 0.0
    timings["simulate_s"] = time.perf_counter() - t0
    timings["frames"] = spec.frames
    deps = bpy.context.evaluated_depsgraph_get()
    poses = []
    for p, ob in zip(particles, obs):
        ev = ob.evaluated_get(deps)
        mw = np.array(ev.matrix_world)
        loc = mw[:3, 3] * unit
        q = ev.matrix_world.to_quaternion()
        poses.append({"id": p.id, "shape": p.shape, "size_nm": p.size_nm, "aspect": p.aspect,
                      "location_nm": [float(x) for x in loc], "rotation_wxyz": [float(q.w), float(q.x), float(q.y), float(q.z)]})
    return poses, unit, timings


def render_passes(spec, unit: float, out_dir: str) -> dict:
    scene = bpy.context.scene
    field = spec.field_nm / unit
    cam_z = 1000.0
    cam_data = bpy.data.cameras.new("cam")
    cam_data.type = "ORTHO"
    cam_data.ortho_scale = field
    cam_data.clip_start = 0.1
    cam_data.clip_end = 2 * cam_z
    cam = bpy.data.objects.new("cam", cam_data)
    cam.location = (0, 0, cam_z)
    scene.collection.objects.link(cam)
    scene.camera = cam
    r = scene.render
    r.engine = "CYCLES"
    r.resolution_x = r.resolution_y = spec.size_px
    r.resolution_percentage = 100
    r.threads_mode = "FIXED"
    r.threads = 1
    r.filter_size = 0.01
    r.dither_intensity = 0.0
    cy = scene.cycles
    cy.device = "CPU"
    cy.samples = 1
    cy.use_denoising = False
    cy.max_bounces = 0
    cy.use_adaptive_sampling = False
    cy.seed = 0
    scene.view_settings.view_transform = "Raw"
    vl = scene.view_layers[0]
    vl.use_pass_z = True
    vl.use_pass_object_index = True
    if spec.borders:
        r.use_freestyle = True
        r.line_thickness_mode = "ABSOLUTE"
        r.line_thickness = 1.0
        fs = vl.freestyle_settings
        fs.as_render_pass = True
        lineset = fs.linesets[0] if len(fs.linesets) else fs.linesets.new("borders")
        lineset.select_by_visibility = True
        lineset.select_silhouette = True
        lineset.select_border = True
        lineset.select_crease = False
        if lineset.linestyle is None:
            lineset.linestyle = bpy.data.linestyles.new("borders")
        lineset.linestyle.color = (1.0, 1.0, 1.0)
        lineset.linestyle.thickness = 1.0
    if hasattr(r.image_settings, "media_type"):  # Blender 5
        r.image_settings.media_type = "MULTI_LAYER_IMAGE"
        r.image_settings.file_format = "OPEN_EXR_MULTILAYER"
    else:
        r.image_settings.file_format = "OPEN_EXR_MULTILAYER"
    r.image_settings.color_depth = "32"
    r.image_settings.exr_codec = "ZIP"
    path = os.path.join(out_dir, "passes.exr")
    r.filepath = path
    t0 = time.perf_counter()
    bpy.ops.render.render(write_still=True)
    render_s = time.perf_counter() - t0
    chans = _read_exr(path)
    names = sorted(chans)

    def channel(*cands):
        for c in cands:
            if c in chans:
                return chans[c]
        raise RuntimeError(f"render pass {cands[0]} missing; channels: {names}")

    depth = channel("ViewLayer.Depth.Z", "ViewLayer.Z.Z")
    index = channel("ViewLayer.Object Index.X", "ViewLayer.IndexOB.X")
    height = np.where(depth < cam_z * 1.5, cam_z - depth, 0.0) * unit
    ids = np.rint(index).astype(np.uint16)
    height[ids == 0] = 0.0
    borders = np.zeros_like(height)
    if spec.borders:
        borders = channel("ViewLayer.Freestyle.A", "ViewLayer.Freestyle.R")
    os.remove(path)
    np.savez(os.path.join(out_dir, "raw.npz"), height_nm=height.astype(np.float32), ids=ids,
             borders=np.clip(borders, 0, 1).astype(np.float32))
    return {"render_s": render_s, "channels": names}


def run_job(job: dict) -> dict:
    spec = spec_from_dict(job["spec"])
    out_dir = job["out"]
    os.makedirs(out_dir, exist_ok=True)
    poses, unit, timings = build_and_simulate(spec)
    info = render_passes(spec, unit, out_dir)
    timings["render_s"] = info["render_s"]
    with open(os.path.join(out_dir, "poses.json"), "w") as fh:
        json.dump({"unit_nm": unit, "particles": poses, "timings": timings}, fh)
    return {"out": out_dir, "timings": timings}


def main() -> int:
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        try:
            result = run_job(json.loads(line))
            sys.stdout.write(f"{DONE} {json.dumps(result)}\n")
        except Exception as exc:  # reported to the parent, which raises it with context
            sys.stdout.write(f"{FAIL} {json.dumps({'error': f'{type(exc).__name__}: {exc}', 'trace': traceback.format_exc()})}\n")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
