import io

from facesift.common import progress as progress_mod


def test_off_a_terminal_bars_print_whole_plain_lines(monkeypatch):
    err = io.StringIO()
    monkeypatch.setattr(progress_mod.sys, "stderr", err)
    with progress_mod.progress(total=1000, desc="outer", unit="run") as outer:
        for _ in range(3):
            with progress_mod.progress(total=50, desc="inner", leave=False, unit="step") as inner:
                for _ in range(50):
                    inner.update()
            outer.update(1)
    text = err.getvalue()
    assert "\r" not in text and "\x1b" not in text
    lines = text.splitlines()
    assert all(line.strip() for line in lines)
    # a start and an end line per bar at most (the 30 s interval never passes here)
    assert len([l for l in lines if l.startswith("outer")]) <= 2 and len(lines) <= 2 + 2 * 3
    assert lines[-1].startswith("outer: 3/1000 run")


def test_on_a_terminal_it_is_plain_tqdm(monkeypatch):
    class Tty(io.StringIO):
        def isatty(self):
            return True
    err = Tty()
    monkeypatch.setattr(progress_mod.sys, "stderr", err)
    bar = progress_mod.progress(total=2, desc="t", file=err)
    bar.update(2)
    bar.close()
    assert "\r" in err.getvalue()
