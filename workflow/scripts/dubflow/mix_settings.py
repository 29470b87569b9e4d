"""The ``mix:`` section resolved to numbers: presets and ``auto`` values replaced.

Its own module because every part of the mix stage takes a :class:`MixSettings`
(:mod:`dubflow.mix_lines`, :mod:`dubflow.mix_control`, :mod:`dubflow.mix_render`), and so
does the review app's preview, which hears a line as the mix would without running it.
"""

from dataclasses import dataclass

from dubflow import config_schema

STAGE = "mix"

#: How far the bed is ducked under a line with duck_db: auto. Spleeter leaves the original
#: speech 12 dB down in the bed where music is as loud as the speech, 21 dB where it is
#: 10 dB under (the per-cell measure of tests/test_separation), so a light 10 dB dip keeps
#: the music 2 dB fuller than the 12 dB the unseparated mix needs; the band duck below
#: does the rest.
AUTO_DUCK_DB = {"spleeter": 10.0, "dtln": 10.0, "none": 12.0}
#: mix.band_duck_db: auto. What Spleeter leaves of the original speech sits almost all in
#: 150-2400 Hz (fundamentals and first formants sharing cells with chords and bass: 97 % of
#: the leak, measured per band in tests/test_separation), where the dub voice is too. A
#: further 10 dB dip there under a line takes the original voices 30 dB or more under the
#: dub (30.4 dB at equal level, 39.8 with the music 10 dB under the speech; the broadband
#: duck alone: 21.3 and 30.3) while the music's lows and highs stay at the light duck.
AUTO_BAND_DUCK_DB = {"spleeter": 10.0, "dtln": 10.0, "none": 0.0}
#: mix.loudness: (integrated LUFS, true-peak ceiling dBTP) of the common delivery specs.
LOUDNESS_PRESETS = {"streaming": (-16.0, -1.0), "ebu-r128": (-23.0, -1.0),
                    "atsc-a85": (-24.0, -2.0)}
#: Dub layouts: ffmpeg's name by channel count (how the voice is placed in each:
#: mix_render.VOICE_PAN).
LAYOUTS = {1: "mono", 2: "stereo", 6: "5.1", 8: "7.1"}


@dataclass(frozen=True)
class MixSettings:
    """The ``mix:`` section resolved: presets and ``auto`` values replaced by numbers."""

    target_lufs: float
    true_peak_db: float
    max_speedup: float
    sample_rate: int
    channels: int
    duck_db: float
    band_duck_db: float
    fade_ms: float
    max_lead_s: float
    restore_dialogue: bool  # only over a separated bed: the original mix has its dialogue


def settings(mix: dict | None, source_channels: int | None = None) -> MixSettings:
    """The ``mix:`` section (defaults and ranges from the schema) as numbers.

    ``channels: auto`` gives the dub the source's layout (``source_channels``): mono,
    stereo, 5.1 or 7.1; any other layout (or an unknown one) gets stereo."""
    mix = config_schema.section("mix", mix)
    preset_lufs, preset_tp = LOUDNESS_PRESETS[mix["loudness"]]
    channels = mix["channels"]
    if channels == "auto":
        channels = source_channels if source_channels in LAYOUTS else 2
    duck_db, band_duck_db = mix["duck_db"], mix["band_duck_db"]
    return MixSettings(
        target_lufs=float(preset_lufs if mix["target_lufs"] is None else mix["target_lufs"]),
        true_peak_db=float(preset_tp if mix["true_peak_db"] is None else mix["true_peak_db"]),
        max_speedup=float(mix["max_speedup"]),
        sample_rate=mix["sample_rate"],
        channels=channels,
        duck_db=float(AUTO_DUCK_DB[mix["separation"]] if duck_db == "auto" else duck_db),
        band_duck_db=float(AUTO_BAND_DUCK_DB[mix["separation"]] if band_duck_db == "auto"
                           else band_duck_db),
        fade_ms=float(mix["fade_ms"]),
        max_lead_s=float(mix["max_lead_s"]),
        restore_dialogue=mix["restore_dialogue"] and mix["separation"] != "none",
    )
