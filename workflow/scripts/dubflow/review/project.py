"""What the review app knows of one built video: its config, lines, fit and voices.

Everything here is read from the files the workflow wrote (``work/<name>/...``) and the
workflow's own inputs (config, ``edits/``); nothing is written except the two input files
a reviewer changes (:func:`write_edits`, ``choices.write_choices``). Requests never name a
file: they name a language and a line id, checked here against the known ones, and the
paths are built from those.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from dubflow import condense, records, settings as dubflow_settings
from dubflow.atomic import write_text
from dubflow.errors import DubflowError, InputError
from dubflow.review import choices

STAGE = "review"
WORKFLOW_DIR = Path(__file__).resolve().parents[3]
#: Fit flags a reviewer should look at (borrowed and led time are inaudible).
CHECK_FLAGS = {"sped_up", "trimmed", "condensed", "cut", "low_confidence"}


class ReviewError(DubflowError):
    """A request the app refuses: one sentence, nothing changed."""


class Unknown(ReviewError):
    """A request names a language, line or speaker this video does not have (HTTP 404)."""


class Superseded(ReviewError):
    """A preview given up because a newer text for the same line was asked for (HTTP 409)."""

    @classmethod
    def of(cls, line_id: str) -> Superseded:
        return cls(f"Line {line_id} was edited again before its preview was ready; "
                   f"preview the newer text.")


def load_config(root: Path, configfiles: list[str | Path] = ()) -> dict:
    """The config a Snakemake run in ``root`` sees: the workflow's defaults, then each
    ``--configfile`` in order (nested keys merged, as Snakemake does), checked and filled
    in by the schema, with model paths resolved like the workflow does."""
    from snakemake.utils import update_config

    config = yaml.safe_load((WORKFLOW_DIR.parent / "config" / "config.yaml").read_text())
    for name in configfiles:
        path = Path(name) if Path(name).is_absolute() else root / name
        try:
            extra = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as error:
            raise InputError(f"the config file {path} cannot be read ({error}); name a "
                             f"readable YAML file with --configfile") from None
        update_config(config, extra)
    dubflow_settings.validate_config(config, WORKFLOW_DIR / "schemas" / "config.schema.yaml")
    dubflow_settings.resolve_model_paths(config, WORKFLOW_DIR.parent)
    return config


@dataclass
class Row:
    """One line as the page shows it."""

    id: str
    speaker: str
    start: float
    end: float
    source: str
    text: str
    voice: str
    flags: list[str]
    limit: int
    edited: bool
    play_start: float  # where the dub line sounds (it may lead its source time)
    play_end: float
    speed: float = 1.0

    @property
    def to_check(self) -> bool:
        return bool(CHECK_FLAGS & set(self.flags))


@dataclass
class Language:
    """One target language of the video: its rows, voices and loudness."""

    code: str
    rows: list[Row]
    voices: dict[str, str]  # speaker -> voice spec in use
    gain_db: float
    duration_s: float
    speakers: list[str] = field(default_factory=list)

    def row(self, line_id: str) -> Row:
        for row in self.rows:
            if row.id == line_id:
                return row
        raise Unknown(f"There is no line {line_id!r} in the {self.code} dub; "
                          f"reload the page to see the current lines.")


class Video:
    """One built video in a project folder, as the workflow left it."""

    def __init__(self, root: str | Path, name: str, config: dict) -> None:
        self.root, self.name = Path(root).resolve(), name
        self.base_config = config
        samples = dubflow_settings.load_samples(
            config, WORKFLOW_DIR / "schemas" / "samples.schema.yaml")
        self.sample = samples.get(name)
        if self.sample is None:
            raise InputError(f"there is no video named '{name}' in this project (in/ or the "
                             f"samples sheet); pass --name with one of: "
                             f"{', '.join(sorted(samples)) or 'none'}")
        self.video_path = self.root / self.sample.path
        self.work = self.root / "work" / name
        self.reload()

    # -- config ------------------------------------------------------------------------
    @property
    def edits_dir(self) -> Path:
        return self.root / self.base_config["edits_dir"]

    @property
    def voices_file(self) -> Path:
        return choices.voices_path(self.edits_dir, self.name)

    def settings(self) -> dict:
        """This video's settings, as ``settings_for`` in rules/common.smk builds them."""
        merged = dubflow_settings.settings_for(self.base_config, self.sample)
        return choices.merge_voices(merged, choices.read_choices(self.voices_file))

    def edits_file(self, lang: str) -> Path:
        return self.edits_dir / f"{self.name}.{self.language(lang).code}.tsv"

    # -- reading -----------------------------------------------------------------------
    def reload(self) -> None:
        """Read the built files again (after a rebuild)."""
        cfg = self.settings()
        targets = [str(lang) for lang in cfg["target_languages"]]
        self.mkv = self.root / "out" / f"{self.name}.mkv"
        if not self.mkv.is_file():
            raise InputError(f"{self.mkv} does not exist; build the video first "
                             f"(snakemake out/{self.name}.mkv), then start the review")
        transcript = records.read_transcript(self.work / "transcript.json", STAGE)
        self.source_language = str(transcript.get("language") or "")
        low = {str(seg.get("id")).lstrip("0") for seg in transcript.get("segments", [])
               if seg.get("low_confidence")}  # segment 7 is line 0007
        self.languages = {lang: self._read_language(lang, cfg, low) for lang in targets}

    def _read_language(self, lang: str, cfg: dict, low_confidence: set[str]) -> Language:
        folder = self.work / lang
        translation = records.read_translation(folder / "translation.json", STAGE)
        fit = records.read_fit(folder / "fit.json", STAGE)
        placed = {row.id: row for row in fit.lines}
        tts_lines = folder / "tts" / "lines.json"
        synthesized = ({row.id: row.voice for row in records.read_tts_lines(tts_lines, STAGE)}
                       if tts_lines.exists() else {})
        duration = translation.duration_s or 0.0
        rooms = condense.rooms([condense.Span(x.id, x.start, x.end) for x in translation.lines])
        per_second = (cfg["translation"]["condense"]["chars_per_second"]
                      * cfg["tts"]["max_speed_boost"] * cfg["mix"]["max_speedup"])
        rows = []
        for line in translation.lines:
            place = placed.get(line.id) or records.FitRow(line.id)
            flags = list(place.flags)
            if place.cut:
                flags.append("cut")
            if line.full_text:
                flags.append("condensed")
            if line.id.lstrip("0") in low_confidence:
                flags.append("low_confidence")
            start, end = line.start, line.end
            room = rooms.get(line.id, end - start)
            if not math.isfinite(room):
                room = max(end - start, duration - start)
            play_start = start if place.start is None else place.start
            rows.append(Row(
                id=line.id, speaker=line.speaker or "SPEAKER_00", start=start, end=end,
                source=line.source, text=line.text, voice=synthesized.get(line.id, ""),
                flags=flags,
                # never below what the workflow itself wrote there: a reviewer may always
                # reword a line without making it longer
                limit=max(line_limit(room, per_second), letters(line.text)),
                edited=line.edited,
                play_start=play_start,
                play_end=play_start + (end - start if place.played_s is None else place.played_s),
                speed=1.0 if place.speed is None else place.speed))
        voices = {str(speaker): str(info.get("voice"))
                  for speaker, info in fit.voices.items()}
        for row in rows:
            voices.setdefault(row.speaker, row.voice)
        speakers = sorted({row.speaker for row in rows})
        return Language(lang, rows, voices, float(fit.loudness.get("gain_db") or 0.0), duration,
                        speakers)

    # -- checking what a request names ---------------------------------------------------
    def language(self, lang: str) -> Language:
        if lang not in self.languages:
            raise Unknown(f"This video has no {lang!r} dub; its languages are "
                              f"{', '.join(self.languages)}.")
        return self.languages[lang]

    def check_text(self, lang: str, line_id: str, text: object) -> tuple[Row, str]:
        """The row and the text made one line; a sentence for an empty or too long text."""
        row = self.language(lang).row(line_id)
        if not isinstance(text, str) or not text.strip():
            raise ReviewError(f"The new text of line {line_id} is empty; write what the "
                              f"voice should say.")
        text = " ".join(text.split())
        count = letters(text)
        if count > row.limit:
            raise ReviewError(f"The new text of line {line_id} has {count} letters, more "
                              f"than the {row.limit} that can be spoken in its "
                              f"{row.end - row.start:.1f} s; shorten it.")
        return row, text

    def check_voice(self, lang: str, speaker: object, spec: object) -> tuple[str, str]:
        """A speaker of this language and a voice spec the synthesize stage accepts."""
        from dubflow import voices

        language = self.language(lang)
        if not isinstance(speaker, str) or speaker not in language.speakers:
            raise Unknown(f"There is no speaker {speaker!r} in the {lang} dub.")
        if not isinstance(spec, str) or not spec.strip():
            raise ReviewError(f"Choose a voice for {speaker}.")
        try:
            voices.resolve(spec.strip(), voices.settings(self.settings()["tts"]), lang,
                           f"the voice for {speaker}")
        except DubflowError as error:
            raise ReviewError(f"The voice {spec.strip()!r} cannot be used: "
                              f"{str(error).rstrip('.')}.") from None
        return speaker, spec.strip()


def line_limit(room_s: float, chars_per_second: float) -> int:
    """The most letters (as condense.predicted_s counts them) a line may have: what fits
    its room spoken at the voice's top speed boost and then sped up by the mix's most, with
    a tenth to spare; any longer and the mix would have to cut words off."""
    return max(20, math.floor(max(0.0, room_s) * chars_per_second * 1.1))


def letters(text: str) -> int:
    """Letters and digits: what a voice takes time to say (as condense.predicted_s counts)."""
    return sum(ch.isalnum() for ch in text)


# -- the edits file -----------------------------------------------------------------------


def read_edit_rows(path: Path) -> dict[str, dict[str, str]]:
    """The rows of an edits file by line id (ids with lost zeros made whole again)."""
    if not path.is_file():
        return {}
    reader = csv.reader(io.StringIO(path.read_text(encoding="utf-8-sig"), newline=""),
                        delimiter="\t")
    rows = [row for row in reader if any(cell.strip() for cell in row)]
    if not rows:
        return {}
    columns = [cell.strip().lower() for cell in rows[0]]
    found = {}
    for row in rows[1:]:
        cells = dict(zip(columns, (cell.strip() for cell in row)))
        line_id = cells.get("id", "")
        line_id = line_id.zfill(4) if line_id.isdigit() else line_id
        if line_id:
            found[line_id] = {"text": cells.get("text", ""), "source": cells.get("source", "")}
    return found


def write_edits(path: Path, changes: dict[str, tuple[str, str]]) -> None:
    """Lay ``{id: (text, source)}`` over the edits file and write it atomically.

    The source column guards each row: the translate stage refuses a row whose source no
    longer matches the transcript, so an edit cannot land on another line later.
    """
    rows = read_edit_rows(path)
    for line_id, (text, source) in changes.items():
        rows[line_id] = {"text": text, "source": source}
    out = io.StringIO()
    writer = csv.writer(out, delimiter="\t", lineterminator="\n")
    writer.writerow(["id", "text", "source"])
    writer.writerows([line_id, row["text"], row["source"]] for line_id, row in sorted(rows.items()))
    write_text(path, out.getvalue())
