"""The embedded offline audio source ``speech``: an English corpus synthesized once by Debian's espeak-ng.

Why synthesized speech: the SimVQ paper's audio experiments train on LibriTTS (tens of GB, not
downloadable here); a benchmark default must build offline in about a minute. espeak-ng (formant
synthesis, a Debian package) gives real phonetic structure: voiced and unvoiced segments, formant
transitions, pitch contours, pauses, many voices, all reproducible for one espeak-ng version.

Text: ``SENTENCES_PER_VOICE`` sentences per voice, generated deterministically (``random.Random(0)``)
from the templates and word lists below, so no voice reads another voice's text. Voices: the eight
English accents espeak-ng ships (US, British, Scottish, Lancaster, Received Pronunciation, West
Midlands, Caribbean, New York City) × its male/female variants, 16 voices; every sentence is spoken at
a rate (words per minute) and pitch drawn from ``RATES`` and ``PITCHES``.

Split BY VOICE: the voices in ``TEST_VOICES`` (4 of 16: two male, two female, four accents) are held out
entirely, so the test set is speakers (and text) never seen in training, as LibriTTS's test-clean is.
``test_groups`` holds each test clip's voice index (into ``VOICES``) for stratified evaluation.

Audio: espeak-ng's 22,050 Hz output is resampled to the requested rate (16 kHz by default, the paper's),
each voice's sentences are concatenated and cut into non-overlapping clips of ``clip_samples``;
near-silent clips are dropped (:mod:`benchmark.data.audio_io`). At the defaults (1 s clips, 48 sentences
per voice) the corpus has 2,744 train clips (12 voices) and 906 test clips (4 voices, 216-234 each):
906 s of test speech = 45,300 tokens at the codec's 50 tokens/s, i.e. 44 tokens per code at K = 2^10 and
11 at K = 2^12 (issue 11 asks for >= 10). The build takes 15-30 s on 2 shared cores and is cached; ``seed``
is not used (the corpus is one fixed set of clips).
"""
from __future__ import annotations

import random
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from io import BytesIO

import numpy as np
import torch

from benchmark.data.audio_io import cut_clips, read_audio, resample, to_pcm16
from benchmark.data.cache import cached_dataset
from benchmark.data.dataset import Dataset, content_digest
from benchmark.data.sources import register_source

#: (accent, variant) pairs: espeak-ng's ``-v accent+variant``. m* variants are male, f* female.
VOICES = (
    ("en-us", "m1"), ("en-gb", "f2"), ("en-gb-scotland", "m3"), ("en-gb-x-gbclan", "f1"),
    ("en-gb-x-rp", "m2"), ("en-gb-x-gbcwmd", "f3"), ("en-029", "m4"), ("en-us-nyc", "f4"),
    ("en-us", "f5"), ("en-gb", "m5"), ("en-gb-scotland", "f2"), ("en-gb-x-gbclan", "m6"),
    ("en-gb-x-rp", "f1"), ("en-gb-x-gbcwmd", "m7"), ("en-029", "f3"), ("en-us-nyc", "m2"),
)
#: Held-out voices (indices into VOICES): US m1, Scottish f2, RP f1, New York m2.
TEST_VOICES = (0, 10, 12, 15)
SENTENCES_PER_VOICE = 48
RATES = (135, 150, 165, 180)     # espeak-ng -s, words per minute (its default is 175)
PITCHES = (30, 40, 50, 60, 70)   # espeak-ng -p, 0-99 (its default is 50)
ESPEAK_RATE = 22_050             # espeak-ng's output sample rate
BUILD_VERSION = 1                # bump when the construction changes, so old caches are not reused
INSTALL_HINT = "apt-get install espeak-ng (Debian/Ubuntu; scripts/setup.sh does it when run as root)"

_SUBJECTS = ("the old fisherman", "a young teacher", "my neighbour", "the quiet engineer", "our captain",
             "the tired doctor", "a curious child", "the baker", "your sister", "the village mayor",
             "a travelling musician", "the night nurse", "his grandfather", "the new student")
_VERBS = ("carried", "painted", "repaired", "borrowed", "forgot", "discovered", "delivered", "measured",
          "cleaned", "described", "ordered", "watched", "hid", "sold")
_OBJECTS = ("a wooden chair", "the broken radio", "seven yellow lamps", "a map of the coast",
            "the heavy suitcase", "two bottles of milk", "an umbrella", "the silver key",
            "a basket of apples", "the kitchen window", "a letter from Paris", "the garden gate",
            "forty paper cups", "a very large clock")
_PLACES = ("near the harbour", "before breakfast", "on a windy afternoon", "behind the station",
           "after the storm", "during the long winter", "at the edge of the forest", "by the bridge",
           "in the crowded market", "late on Thursday evening", "under the grey sky", "inside the library")
_TEMPLATES = (
    "{S} {V} {O} {P}.",
    "{P}, {S} {V} {O}.",
    "Why had {s} {v} {o} {p}?",
    "Nobody expected that {s} {v} {o}, but it happened {p}.",
    "It was {n} minutes past {h} when {s} finally {v} {o}.",
    "Please tell {s} that {o} is waiting {p}.",
    "{S} said: I have never {v} {o} so quickly!",
    "If {s} {v} {o} again, we will need {n} more hours.",
)
_NUMBERS = ("five", "twelve", "twenty", "thirty-three", "forty", "fifty-seven", "eighty", "ninety-nine")
_HOURS = ("one", "three", "six", "eight", "ten", "eleven")


class SpeechSynthesisError(RuntimeError):
    """espeak-ng is missing or failed to synthesize a sentence."""


def sentences(count: int, rng: random.Random) -> list[str]:
    """``count`` English sentences from the templates: varied syntax, questions, numbers, quotes."""
    lines = []
    for _ in range(count):
        parts = {"s": rng.choice(_SUBJECTS), "v": rng.choice(_VERBS), "o": rng.choice(_OBJECTS),
                 "p": rng.choice(_PLACES), "n": rng.choice(_NUMBERS), "h": rng.choice(_HOURS)}
        parts |= {key.upper(): value[0].upper() + value[1:] for key, value in parts.items()}
        lines.append(rng.choice(_TEMPLATES).format(**parts))
    return lines


def corpus_plan(sentences_per_voice: int) -> list[tuple[int, str, int, int]]:
    """``(voice index, sentence, rate, pitch)`` for every utterance, in a fixed order."""
    rng = random.Random(0)
    plan = []
    for voice in range(len(VOICES)):
        for sentence in sentences(sentences_per_voice, rng):
            plan.append((voice, sentence, rng.choice(RATES), rng.choice(PITCHES)))
    return plan


def espeak_binary() -> str:
    path = shutil.which("espeak-ng")
    if path is None:
        raise SpeechSynthesisError(f"the 'speech' dataset needs the espeak-ng program: {INSTALL_HINT}")
    return path


def espeak_version() -> str:
    """espeak-ng's version string (part of the cache key: another version speaks differently)."""
    result = subprocess.run([espeak_binary(), "--version"], capture_output=True, text=True, check=False)
    return result.stdout.split("Data at")[0].replace("eSpeak NG text-to-speech:", "").strip() or "unknown"


def synthesize(voice: int, sentence: str, rate: int, pitch: int) -> np.ndarray:
    """One utterance as float32 samples at espeak-ng's 22,050 Hz."""
    accent, variant = VOICES[voice]
    command = [espeak_binary(), "-v", f"{accent}+{variant}", "-s", str(rate), "-p", str(pitch),
               "--stdout", sentence]
    result = subprocess.run(command, capture_output=True, check=False)
    if result.returncode != 0 or not result.stdout:
        raise SpeechSynthesisError(f"espeak-ng failed ({' '.join(command[:-1])}): "
                                   f"{result.stderr.decode(errors='replace').strip()}")
    samples, rate_out = read_audio(BytesIO(result.stdout))
    if rate_out != ESPEAK_RATE:
        samples = resample(samples, rate_out, ESPEAK_RATE)
    return samples


def build_speech(*, sample_rate: int, clip_samples: int,
                 sentences_per_voice: int = SENTENCES_PER_VOICE, workers: int = 2) -> Dataset:
    """Synthesize every voice's sentences, resample, cut into clips and split by voice."""
    plan = corpus_plan(sentences_per_voice)
    with ThreadPoolExecutor(max_workers=workers) as pool:  # espeak-ng runs as a subprocess per sentence
        utterances = list(pool.map(lambda item: synthesize(*item), plan))
    per_voice: dict[int, list[np.ndarray]] = {}
    for (voice, *_), samples in zip(plan, utterances):
        per_voice.setdefault(voice, []).append(samples)
    train_parts, test_parts, groups = [], [], []
    for voice, parts in sorted(per_voice.items()):
        clips = cut_clips(resample(np.concatenate(parts), ESPEAK_RATE, sample_rate), clip_samples)
        if voice in TEST_VOICES:
            test_parts.append(clips)
            groups.append(np.full(len(clips), voice, dtype=np.int64))
        else:
            train_parts.append(clips)
    train, test = to_pcm16(np.concatenate(train_parts)), to_pcm16(np.concatenate(test_parts))
    if len(train) == 0 or len(test) == 0:
        raise ValueError(f"clip_samples={clip_samples} is too long for {sentences_per_voice} sentences "
                         f"per voice: train has {len(train)} clips, test {len(test)}")
    test_names = ", ".join(f"{a}+{v}" for i, (a, v) in enumerate(VOICES) if i in TEST_VOICES)
    source = (f"espeak-ng {espeak_version()}: {len(VOICES)} voices x {sentences_per_voice} generated "
              f"sentences, {ESPEAK_RATE} Hz resampled to {sample_rate} Hz, {clip_samples}-sample clips; "
              f"test = held-out voices {test_names}")
    return Dataset(name="speech", source=source, train=train, test=test,
                   digest=content_digest(train, test), test_groups=torch.from_numpy(np.concatenate(groups)),
                   modality="audio", sample_rate=sample_rate)


def load_speech(*, sample_rate: int = 16_000, clip_samples: int = 16_000, cache_dir,
                sentences_per_voice: int = SENTENCES_PER_VOICE) -> Dataset:
    """The speech corpus at ``sample_rate`` in ``clip_samples`` clips, built once and cached."""
    if sentences_per_voice < 1:
        raise ValueError(f"sentences_per_voice must be >= 1, got {sentences_per_voice}")
    if sample_rate < 1 or clip_samples < 1:
        raise ValueError(f"sample_rate and clip_samples must be positive, got {sample_rate}, {clip_samples}")
    version = "".join(c if c.isalnum() or c in ".-" else "_" for c in espeak_version())
    key = (f"speech-v{BUILD_VERSION}-sr{sample_rate}-clip{clip_samples}-"
           f"sentences{sentences_per_voice}-espeak{version}")
    return cached_dataset(cache_dir, key, lambda: build_speech(
        sample_rate=sample_rate, clip_samples=clip_samples, sentences_per_voice=sentences_per_voice))


@register_source("speech", modality="audio",
                 description="English speech synthesized offline by espeak-ng (16 voices, 4 held out)")
def _load(request, cache_dir):
    return load_speech(sample_rate=request.sample_rate, clip_samples=request.clip_samples,
                       cache_dir=cache_dir)
