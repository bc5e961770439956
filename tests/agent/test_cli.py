import json

from agent.cli import main


def test_demo_streams_a_file_and_reports_json(tmp_path, capsys):
    text = tmp_path / "t.txt"
    text.write_bytes(("the quick brown fox jumps over the lazy dog. " * 40).encode())
    assert main(["demo", "--preset", "tiny", "--file", str(text), "--chunk", "64", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["bytes_read"] == text.stat().st_size
    assert 0 < report["bits_per_byte"] < 16
    assert report["memory_pairs"] == report["bytes_read"]  # every chunk read was stored
    assert report["state_bytes"] > 0


def test_missing_file_is_a_one_line_error(tmp_path, capsys):
    assert main(["demo", "--preset", "tiny", "--file", str(tmp_path / "nope.txt")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lifelong demo:") and "\n" not in err
