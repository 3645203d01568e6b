import numpy as np
import pandas as pd
import pytest

from components.core.config import CleanConfig, DataConfig, IngestConfig
from components.core.dataset import LABEL, TEXT
from components.core.errors import DataError
from components.tasks.text_data import clean, normalized_key, read_table, split

DATA = DataConfig(text_column="text", label_column="sentiment")


def write(tmp_path, name, content: bytes):
    path = tmp_path / name
    path.write_bytes(content)
    return path


def test_reads_invalid_utf8_and_bom_and_counts_bad_lines(tmp_path):
    path = write(tmp_path, "d.csv", b"\xef\xbb\xbfsentiment,text\r\npositive,caf\xe9 ok\r\nnegative,fine\r\n")
    frame, report = read_table(path, DATA)
    assert list(frame.columns) == [TEXT, LABEL]
    assert report.rows_read == 2
    assert report.lines_with_invalid_utf8 == 1
    assert frame[TEXT].tolist() == ["caf\ufffd ok", "fine"]


@pytest.mark.parametrize(
    ("content", "column", "rule"),
    [
        (b"", None, "non_empty_file"),
        (b"sentiment,text\n", None, "non_empty_file"),
        (b"label,text\npositive,hi\n", "sentiment", "required_column"),
        (b"sentiment;text\npositive;hi\n", None, "delimiter"),
        (b"sentiment,confidence\npositive,0.5\n", "text", "required_column"),
    ],
)
def test_unreadable_input_names_file_column_and_rule(tmp_path, content, column, rule):
    path = write(tmp_path, "bad.csv", content)
    with pytest.raises(DataError) as err:
        read_table(path, DATA)
    assert err.value.rule == rule and err.value.column == column
    assert str(path) in str(err.value)


def test_missing_file_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        read_table(tmp_path / "nope.csv", DATA)


def test_clean_counts_every_dropped_row():
    frame = pd.DataFrame({
        TEXT: ["a &amp; b", "a & b", "x\r\n y", "same", "same", "same", "   ", None, "ok"],
        LABEL: ["pos", "pos", "neg", "pos", "pos", "neg", "pos", "neg", "neg"],
    })
    out, report = clean(frame, CleanConfig())
    assert report.changed["html_entities"] == 1
    assert report.changed["whitespace"] >= 2
    assert report.dropped == {"missing_text_or_label": 1, "empty_text": 1, "exact_duplicate": 2,
                              "normalized_duplicate": 0, "conflicting_labels": 2}
    assert sorted(out[TEXT]) == ["a & b", "ok", "x y"]
    assert report.rows_in - sum(report.dropped.values()) == report.rows_out == len(out)


def test_clean_rules_can_be_switched_off():
    frame = pd.DataFrame({TEXT: ["same", "same"], LABEL: ["pos", "pos"]})
    out, report = clean(frame, CleanConfig(drop_exact_duplicates=False, drop_normalized_duplicates=False))
    assert len(out) == 2 and "exact_duplicate" not in report.dropped


def test_normalized_duplicates_differ_only_in_case_punctuation_and_spacing():
    frame = pd.DataFrame({TEXT: ["Great car!!", "great   car", "great cars"], LABEL: ["pos"] * 3})
    out, report = clean(frame, CleanConfig())
    assert report.dropped["normalized_duplicate"] == 1
    assert out[TEXT].tolist() == ["Great car!!", "great cars"]


def test_split_is_stratified_seeded_and_disjoint():
    frame = pd.DataFrame({TEXT: [f"t{i}" for i in range(300)], LABEL: ["a", "b", "c"] * 100})
    cfg = IngestConfig(seed=1)
    first, second = split(frame, cfg, "f"), split(frame, cfg, "f")
    assert [len(first[s]) for s in ("train", "val", "test")] == [240, 30, 30]
    assert all(first[s].equals(second[s]) for s in first)
    assert set(first["test"][LABEL].value_counts()) == {10}
    texts = [set(part[TEXT]) for part in first.values()]
    assert not (texts[0] & texts[1] or texts[0] & texts[2] or texts[1] & texts[2])


def test_split_is_stable_as_the_data_grows():
    rng = np.random.default_rng(0)
    texts = [f"text number {i}" for i in range(3000)]
    labels = rng.choice(["a", "b", "c"], size=3000, p=[0.6, 0.3, 0.1]).tolist()
    old = pd.DataFrame({TEXT: texts[:2500], LABEL: labels[:2500]})
    grown = pd.DataFrame({TEXT: texts, LABEL: labels}).sample(frac=1, random_state=1)  # new rows, new order
    where = {}
    for version, frame in (("old", old), ("grown", grown)):
        for name, part in split(frame, IngestConfig(), "f").items():
            where.update({(version, text): name for text in part[TEXT]})
    moved = [t for t in texts[:2500] if where[("old", t)] != where[("grown", t)]]
    old_train_now_test = [t for t in moved if where[("old", t)] == "train" and where[("grown", t)] == "test"]
    # Only rows at a class's cut-off move (a seeded shuffle of the whole table, the old way, moved
    # 35% of them, 8% from train to test).
    assert len(moved) < 25 and len(old_train_now_test) < 10


def test_a_text_goes_to_one_split_however_often_and_under_whatever_labels():
    rng = np.random.default_rng(3)
    distinct = [f"tweet {i}" for i in range(300)]
    # Repeats (15 copies of the lowest-ranked text, at a cut-off), case/punctuation variants and
    # one text under two labels, as data with the duplicate and conflict rules off would have.
    texts = distinct + ["tweet 7"] * 15 + ["TWEET 7!!"] + [f"Tweet {i}." for i in range(0, 300, 3)]
    labels = rng.choice(["a", "b"], size=len(texts)).tolist()
    frame = pd.DataFrame({TEXT: texts, LABEL: labels})
    parts = split(frame, IngestConfig(), "f")
    assert sum(len(p) for p in parts.values()) == len(frame)
    home = {}
    for name, part in parts.items():
        for text in part[TEXT]:
            home.setdefault(normalized_key(text), set()).add(name)
    assert all(len(places) == 1 for places in home.values())
    assert all(len(parts[name]) for name in ("train", "val", "test"))


def test_split_refuses_a_class_with_too_few_distinct_texts():
    tiny = pd.DataFrame({TEXT: [f"t{i}" for i in range(8)], LABEL: ["a"] * 4 + ["b"] * 4})
    with pytest.raises(DataError, match="stratified_split"):
        split(tiny, IngestConfig(val_fraction=0.45, test_fraction=0.45), "f.csv")
    repeated = pd.DataFrame({TEXT: ["same"] * 10 + [f"t{i}" for i in range(10)],
                             LABEL: ["a"] * 10 + ["b"] * 10})
    with pytest.raises(DataError, match="label 'a' has 1 distinct text"):
        split(repeated, IngestConfig(), "f.csv")


def test_sample_cap_is_stable_as_the_data_grows():
    rng = np.random.default_rng(1)
    frame = pd.DataFrame({TEXT: [f"t{i}" for i in range(22000)], LABEL: rng.choice(["a", "b"], 22000)})
    kept = [set(pd.concat(split(f, IngestConfig(sample_cap=5000), "f").values())[TEXT])
            for f in (frame.iloc[:20000], frame)]
    assert all(abs(len(k) - 5000) <= 2 for k in kept)
    assert len(kept[0] & kept[1]) > 0.85 * 5000  # (a seeded shuffle kept 2,080 of them)


def test_split_refuses_a_single_class():
    frame = pd.DataFrame({TEXT: [f"t{i}" for i in range(30)], LABEL: ["a"] * 30})
    with pytest.raises(DataError, match="at_least_two_classes"):
        split(frame, IngestConfig(), "f.csv")


def test_sample_cap_keeps_class_balance():
    frame = pd.DataFrame({TEXT: [f"t{i}" for i in range(1000)], LABEL: ["a"] * 800 + ["b"] * 200})
    parts = split(frame, IngestConfig(sample_cap=100), "f")
    assert sum(len(p) for p in parts.values()) == 100
    assert (pd.concat(parts.values())[LABEL] == "b").sum() == 20


def test_a_gzip_file_named_csv_is_read_and_a_zip_says_what_it_is(tmp_path):
    import gzip

    plain = b"sentiment,text\r\npositive,fine day\r\nnegative,bad day\r\n"
    frame, _ = read_table(write(tmp_path, "g.csv", gzip.compress(plain)), DATA)
    assert frame[TEXT].tolist() == ["fine day", "bad day"]
    with pytest.raises(DataError) as err:
        read_table(write(tmp_path, "z.csv", b"PK\x03\x04" + bytes(100)), DATA)
    assert err.value.rule == "file_format" and "a zip archive" in str(err.value)
    assert "PK" not in str(err.value)  # never the raw bytes as "found" columns


def test_columns_are_taken_by_name_or_guessed_only_when_one_fits(tmp_path):
    from components.tasks.text_data import guess_columns

    reviews = pd.DataFrame({"score": ["0.9", "0.5", "1", "0.7"] * 5, "verdict": ["fresh", "rotten"] * 10,
                            "review": [f"a long review of film number {i}" for i in range(20)]})
    assert guess_columns(reviews, DataConfig(), "r.csv") == ("review", "verdict")
    named = reviews.rename(columns={"review": "text", "verdict": "label"}).assign(mood=["a", "b"] * 10)
    assert guess_columns(named, DataConfig(), "r.csv") == ("text", "label")
    with pytest.raises(DataError, match="one of verdict, mood.*--label-column"):
        guess_columns(reviews.assign(mood=["a", "b"] * 10), DataConfig(), "r.csv")
    assert guess_columns(reviews.assign(mood=["a", "b"] * 10), DataConfig(label_column="mood"),
                         "r.csv") == ("review", "mood")
    with pytest.raises(DataError, match="which column holds the texts"):
        guess_columns(reviews.assign(title=reviews["review"]), DataConfig(), "r.csv")


def test_a_schema_is_inferred_once_with_headroom_and_remembers_given_columns(tmp_path):
    from components.ingest.schema import ensure_schema, load_schema

    path = write(tmp_path, "r.csv", b"verdict,review\nfresh,good film\nrotten,bad film indeed\nfresh,ok\n")
    schema, where, notes = ensure_schema(path, "r", tmp_path, DataConfig())
    assert where == tmp_path / "data" / "r.schema.yaml" and load_schema(where) == schema
    assert (schema.text_column, schema.label_column) == ("review", "verdict")
    assert schema.labels == ["fresh", "rotten"]
    assert schema.text_max_chars == 100 and schema.observed["longest_text_chars"] == 15
    assert notes[0] == "new schema" and "guessed" in notes[2]
    assert ensure_schema(path, "r", tmp_path, DataConfig())[2] == []  # stored: not inferred again
    where.write_text(where.read_text().replace("text_max_chars: 100", "text_max_chars: 300"))
    assert ensure_schema(path, "r", tmp_path, DataConfig())[0].text_max_chars == 300  # edits are kept
    swapped, _, notes = ensure_schema(path, "r", tmp_path, DataConfig(text_column="verdict",
                                                                      label_column="review"))
    assert notes == ["schema re-inferred for the new columns"]  # other columns given: remembered
    assert (swapped.text_column, load_schema(where).label_column) == ("verdict", "review")


def test_sequence_length_from_the_data_is_its_99th_percentile_rounded_up():
    from components.tasks.text import TextTask, data_max_length

    tokenizer = TextTask().load_tokenizer("minilm")
    texts = ["word " * 5] * 99 + ["word " * 100]
    assert data_max_length(tokenizer, texts, cap=512) == 16  # 7 tokens -> the floor of 16
    assert data_max_length(tokenizer, ["word " * 30] * 100, cap=512) == 32  # 32 tokens
    assert data_max_length(tokenizer, ["word " * 600] * 100, cap=512) == 512
