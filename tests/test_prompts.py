"""Tests for engine.prompts: prompt syntax, scenes and the scene schedule."""
from __future__ import annotations

import math

import pytest

from engine.prompts import (Prompt, PromptSyntaxError, parse_prompt, parse_prompt_list,
                            parse_scenes, scene_blend, total_steps)

INF = math.inf


@pytest.mark.parametrize("text, expected", [
    ("a cat", ("a cat", 1.0, -INF)),
    ("  a cat  ", ("a cat", 1.0, -INF)),
    ("a cat:2", ("a cat", 2.0, -INF)),
    ("a cat:2:0.5", ("a cat", 2.0, 0.5)),
    ("text:-1:-.9", ("text", -1.0, -0.9)),
    ("a cat : 2 : -0.5 ", ("a cat", 2.0, -0.5)),
    ("a cat:2 :0.5", ("a cat", 2.0, 0.5)),
    ("a cat:.5", ("a cat", 0.5, -INF)),
    ("a cat:+2", ("a cat", 2.0, -INF)),
    ("a cat:1e-2", ("a cat", 0.01, -INF)),
    ("a cat:-1E+1:2.", ("a cat", -10.0, 2.0)),
    ("a cat:0", ("a cat", 0.0, -INF)),
    ("a cat:1:-inf", ("a cat", 1.0, -INF)),
    ("a cat:1:-INF", ("a cat", 1.0, -INF)),
    ("a cat:abc", ("a cat:abc", 1.0, -INF)),
    ("a cat:abc:1", ("a cat:abc", 1.0, -INF)),
    ("a cat:infinity", ("a cat:infinity", 1.0, -INF)),
    ("note: a cat", ("note: a cat", 1.0, -INF)),
    ("a::b", ("a::b", 1.0, -INF)),
    ("a photo of http://example.com/a:b.png", ("a photo of http://example.com/a:b.png", 1.0, -INF)),
    ("https://x.org/img.png:0.5", ("https://x.org/img.png", 0.5, -INF)),
    ("https://x.org:8080/img.png:2:-1", ("https://x.org:8080/img.png", 2.0, -1.0)),
    (r"C:\images\a.png:0.5", (r"C:\images\a.png", 0.5, -INF)),
    ("sunset at 10:30", ("sunset at 10:30", 1.0, -INF)),
    ("sunset at 10:30:2", ("sunset at 10:30", 2.0, -INF)),
    ("sunset at 10:30:2:-1", ("sunset at 10:30", 2.0, -1.0)),
    ("meet at 10:30 :2", ("meet at 10:30", 2.0, -INF)),
    ("at 10:-1", ("at 10", -1.0, -INF)),
    ("a 16:9 photo", ("a 16:9 photo", 1.0, -INF)),
    ("ratio 16:9", ("ratio 16:9", 1.0, -INF)),
    ("16:9:2:3", ("16:9", 2.0, 3.0)),
    ("v1.2:3", ("v1.2:3", 1.0, -INF)),
    ("v1.2 :3", ("v1.2", 3.0, -INF)),
    ("at 1:10:30", ("at 1:10", 30.0, -INF)),
    ("at 1:10:30 pm:2", ("at 1:10:30 pm", 2.0, -INF)),
    ("2", ("2", 1.0, -INF)),
])
def test_parse_prompt(text, expected):
    p = parse_prompt(text)
    assert (p.text, p.weight, p.stop) == expected


def test_parse_prompt_keeps_scene_and_index():
    assert parse_prompt("a cat:2", scene=3, index=1) == Prompt("a cat", 2.0, -INF, 3, 1)


@pytest.mark.parametrize("scene, index, label", [(0, 0, "s0p0"), (1, 2, "s1p2"), (-1, 3, "s-1p3")])
def test_label(scene, index, label):
    assert Prompt("x", scene=scene, index=index).label == label


@pytest.mark.parametrize("text, fragment", [
    ("", "empty text"),
    (":2", "empty text"),
    ("  :2:1", "empty text"),
    ("a cat:", "empty number"),
    ("a cat::", "empty number"),
    ("a cat: :1", "empty number"),
    ("a:1:2:3", "too many numbers '1:2:3'"),
    ("a cat:2:0.5:1", "too many numbers"),
    ("a cat:nan", "weight 'nan' must be finite"),
    ("a cat:inf", "weight 'inf' must be finite"),
    ("a cat:-inf:1", "weight '-inf' must be finite"),
    ("a cat:1:nan", "stop 'nan' must be finite or -inf"),
    ("a cat:1:inf", "stop 'inf' must be finite or -inf"),
    ("a cat:1:+inf", "stop '+inf' must be finite or -inf"),
])
def test_parse_prompt_errors(text, fragment):
    with pytest.raises(PromptSyntaxError) as info:
        parse_prompt(text)
    message = str(info.value)
    assert fragment in message
    assert repr(text.strip()) in message
    assert "text:weight:stop" in message


def test_prompt_syntax_error_is_value_error():
    assert issubclass(PromptSyntaxError, ValueError)


STUDY = ("a photograph of a bright and beautiful spring day, by Trey Ratcliff"
         " || a painting of a cold wintery landscape, by Rembrandt")
STUDY_SUFFIX = " | text:-1:-.9 | watermark:-1:-.9"


def test_parse_scenes_pytti_study():
    assert parse_scenes(STUDY, suffix=STUDY_SUFFIX) == [
        [Prompt("a photograph of a bright and beautiful spring day, by Trey Ratcliff", 1.0, -INF, 0, 0),
         Prompt("text", -1.0, -0.9, 0, 1),
         Prompt("watermark", -1.0, -0.9, 0, 2)],
        [Prompt("a painting of a cold wintery landscape, by Rembrandt", 1.0, -INF, 1, 0),
         Prompt("text", -1.0, -0.9, 1, 1),
         Prompt("watermark", -1.0, -0.9, 1, 2)],
    ]


@pytest.mark.parametrize("scenes, prefix, suffix, expected", [
    ("a cat", "", "", [[("a cat", 1.0, -INF)]]),
    ("a cat:2 | a dog:-1:-.5", "", "", [[("a cat", 2.0, -INF), ("a dog", -1.0, -0.5)]]),
    ("a cat | | a dog |", "", "", [[("a cat", 1.0, -INF), ("a dog", 1.0, -INF)]]),
    ("a cat||a dog:3", "", "", [[("a cat", 1.0, -INF)], [("a dog", 3.0, -INF)]]),
    ("a cat ||| a dog", "", "", [[("a cat", 1.0, -INF)], [("a dog", 1.0, -INF)]]),
    ("cat:2 || dog", "beautiful ", "", [[("beautiful cat", 2.0, -INF)], [("beautiful  dog", 1.0, -INF)]]),
    ("cat | dog", "", " in the snow:0.5",
     [[("cat", 1.0, -INF), ("dog in the snow", 0.5, -INF)]]),
    ("cat | dog", "sky | ", "", [[("sky", 1.0, -INF), ("cat", 1.0, -INF), ("dog", 1.0, -INF)]]),
])
def test_parse_scenes(scenes, prefix, suffix, expected):
    parsed = parse_scenes(scenes, prefix, suffix)
    assert [[(p.text, p.weight, p.stop) for p in scene] for scene in parsed] == expected
    assert [[(p.scene, p.index) for p in scene] for scene in parsed] == [
        [(k, i) for i in range(len(scene))] for k, scene in enumerate(expected)]


@pytest.mark.parametrize("scenes, fragment, named", [
    ("", "scene 0 is empty", ""),
    ("  |  ", "scene 0 is empty", "  |  "),
    ("a cat || ", "scene 1 is empty", "a cat || "),
    ("a cat || | || a dog", "scene 1 is empty", "a cat || | || a dog"),
    ("a cat || a dog:", "empty number", "a dog:"),
    ("a cat | :2", "empty text", ":2"),
])
def test_parse_scenes_errors(scenes, fragment, named):
    with pytest.raises(PromptSyntaxError) as info:
        parse_scenes(scenes, suffix=STUDY_SUFFIX)
    assert fragment in str(info.value)
    assert repr(named) in str(info.value)


@pytest.mark.parametrize("text, expected", [
    ("", []),
    ([], []),
    ("a.png", [Prompt("a.png", 1.0, -INF, -1, 0)]),
    ("a.png:1 | b.jpg:0.5", [Prompt("a.png", 1.0, -INF, -1, 0), Prompt("b.jpg", 0.5, -INF, -1, 1)]),
    (["a.png:1", "https://x.org/b.jpg:0.5:-2 | c.png"],
     [Prompt("a.png", 1.0, -INF, -1, 0), Prompt("https://x.org/b.jpg", 0.5, -2.0, -1, 1),
      Prompt("c.png", 1.0, -INF, -1, 2)]),
    (["a.png |", " "], [Prompt("a.png", 1.0, -INF, -1, 0)]),
])
def test_parse_prompt_list(text, expected):
    assert parse_prompt_list(text) == expected


@pytest.mark.parametrize("text, fragment", [
    ("a.png || b.png", "'||' in 'a.png || b.png'"),
    (["a.png", "b.png:nan"], "weight 'nan'"),
])
def test_parse_prompt_list_errors(text, fragment):
    with pytest.raises(PromptSyntaxError, match=fragment):
        parse_prompt_list(text)


@pytest.mark.parametrize("n_scenes, steps_per_scene, expected", [(1, 1, 1), (1, 250, 250), (3, 1000, 3000)])
def test_total_steps(n_scenes, steps_per_scene, expected):
    assert total_steps(n_scenes, steps_per_scene) == expected


@pytest.mark.parametrize("args, fragment", [
    ((0, 100), "n_scenes must be >= 1, got 0"),
    ((-2, 100), "got -2"),
    ((2, 0), "steps_per_scene must be >= 1, got 0"),
])
def test_total_steps_errors(args, fragment):
    with pytest.raises(ValueError, match=fragment):
        total_steps(*args)


@pytest.mark.parametrize("step, n_scenes, steps_per_scene, interpolation, expected", [
    # steps_per_scene=1000, interpolation_steps=500
    (0, 3, 1000, 500, [(0, 1.0)]),
    (999, 3, 1000, 500, [(0, 1.0)]),
    (1000, 3, 1000, 500, [(0, 1.0)]),
    (1001, 3, 1000, 500, [(0, 0.998), (1, 0.002)]),
    (1250, 3, 1000, 500, [(0, 0.5), (1, 0.5)]),
    (1499, 3, 1000, 500, [(0, 0.002), (1, 0.998)]),
    (1500, 3, 1000, 500, [(1, 1.0)]),
    (1999, 3, 1000, 500, [(1, 1.0)]),
    (2000, 3, 1000, 500, [(1, 1.0)]),
    (2100, 3, 1000, 500, [(1, 0.8), (2, 0.2)]),
    (2500, 3, 1000, 500, [(2, 1.0)]),
    (2999, 3, 1000, 500, [(2, 1.0)]),
    (3000, 3, 1000, 500, [(2, 1.0)]),  # past the end: last scene
    (99999, 3, 1000, 500, [(2, 1.0)]),
    # no interpolation
    (0, 3, 1000, 0, [(0, 1.0)]),
    (999, 3, 1000, 0, [(0, 1.0)]),
    (1000, 3, 1000, 0, [(1, 1.0)]),
    (1250, 3, 1000, 0, [(1, 1.0)]),
    (2500, 3, 1000, 0, [(2, 1.0)]),
    # interpolation_steps > steps_per_scene is capped at steps_per_scene
    (1500, 3, 1000, 5000, [(0, 0.5), (1, 0.5)]),
    (1999, 3, 1000, 5000, [(0, 0.001), (1, 0.999)]),
    (2000, 3, 1000, 5000, [(1, 1.0)]),
    (3000, 3, 1000, 5000, [(2, 1.0)]),
    # one scene is never blended
    (0, 1, 10, 5, [(0, 1.0)]),
    (12, 1, 10, 5, [(0, 1.0)]),
    # tiny scenes
    (1, 2, 1, 1, [(0, 1.0)]),
    (3, 4, 2, 2, [(0, 0.5), (1, 0.5)]),
])
def test_scene_blend(step, n_scenes, steps_per_scene, interpolation, expected):
    blend = scene_blend(step, n_scenes, steps_per_scene, interpolation)
    assert [k for k, _ in blend] == [k for k, _ in expected]
    assert [f for _, f in blend] == pytest.approx([f for _, f in expected])


@pytest.mark.parametrize("n_scenes, steps_per_scene, interpolation", [
    (1, 7, 3), (3, 10, 0), (3, 10, 4), (3, 10, 10), (4, 10, 25), (2, 1, 1),
])
def test_scene_blend_factors_sum_to_one(n_scenes, steps_per_scene, interpolation):
    for step in range(total_steps(n_scenes, steps_per_scene) + 5):
        blend = scene_blend(step, n_scenes, steps_per_scene, interpolation)
        assert sum(f for _, f in blend) == pytest.approx(1.0)
        assert all(0.0 < f <= 1.0 for _, f in blend)
        assert [k for k, _ in blend] == sorted({k for k, _ in blend})
        assert all(0 <= k < n_scenes for k, _ in blend)


@pytest.mark.parametrize("args, fragment", [
    ((-1, 3, 1000, 500), "step must be >= 0, got -1"),
    ((0, 0, 1000, 500), "n_scenes must be >= 1, got 0"),
    ((0, 3, -5, 500), "steps_per_scene must be >= 1, got -5"),
    ((0, 3, 1000, -1), "interpolation_steps must be >= 0, got -1"),
])
def test_scene_blend_errors(args, fragment):
    with pytest.raises(ValueError, match=fragment):
        scene_blend(*args)


def test_the_weight_schedule_of_a_million_steps_is_built_at_once_and_agrees_with_scene_blend() -> None:
    """Every step at once (numpy), not a Python loop per step: the largest run the settings allow."""
    from engine.prompts import Prompt
    from engine.settings import MAX_STEPS, load_config
    from engine.step import weight_schedule

    s = load_config(None, [f"steps_per_scene={MAX_STEPS // 2}", "interpolation_steps=1000", "scenes=a || b"])
    prompts = [Prompt("a", 2.0, scene=0), Prompt("b", -1.0, scene=1), Prompt("img.png", 0.5, scene=-1)]
    schedule = weight_schedule(s, prompts, 2, init_prompt=None)
    assert tuple(schedule.shape) == (MAX_STEPS, 3)
    for index in (0, MAX_STEPS // 2, MAX_STEPS // 2 + 250, MAX_STEPS - 1):
        factors = dict(scene_blend(index, 2, MAX_STEPS // 2, 1000))
        assert schedule[index].tolist() == pytest.approx([2.0 * factors.get(0, 0), -1.0 * factors.get(1, 0), 0.5])
