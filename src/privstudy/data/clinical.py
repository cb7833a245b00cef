"""Clinical notes: MTSamples in its public formats, and a built-in synthetic corpus of the same shape.

MTSamples (the Kaggle data set "Medical Transcriptions", CC0) is looked for in the folders of
``privstudy.data.locate`` (``data_dir``, ``$PRIVSTUDY_DATA``, Keras' cache, each with its ``mtsamples``
sub-folder) as ``mtsamples.csv`` (Kaggle's layout: an unnamed index column, then
``description,medical_specialty,sample_name,transcription,keywords``) or the same CSV gzipped. Every field
is stripped and empty or all-space fields are missing, as in the Kaggle file's trimmed copies.

One note is filed under several specialties (most transcriptions appear two or three times), so the
corpus is kept as its *distinct* transcriptions, each with the set of specialties it was filed under and
its number of rows (``copies``): members and non-members are split by distinct text, never by row.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import pandas as pd

from privstudy.data import locate

COLUMNS = ("description", "medical_specialty", "sample_name", "transcription", "keywords")
_SPACES = re.compile(r"\s+")


@dataclasses.dataclass(frozen=True)
class NoteCorpus:
    """Distinct notes: ``texts`` (n,) str, ``specialties`` (n,) tuples of str, ``copies`` (n,) int rows
    holding each text, ``source`` (a path or "synthetic")."""

    texts: np.ndarray
    specialties: np.ndarray
    copies: np.ndarray
    source: str

    def __len__(self) -> int:
        return len(self.texts)


def normalise(text: str) -> str:
    """Whitespace runs to one space, ends stripped: what makes two rows "the same text"."""
    return _SPACES.sub(" ", text).strip()


def distinct_notes(rows: pd.DataFrame, source: str) -> NoteCorpus:
    """Group rows (columns ``medical_specialty``, ``transcription``) by normalised transcription, in order
    of first appearance; rows without a transcription are dropped."""
    text = rows["transcription"].astype(object).where(rows["transcription"].notna(), "")
    text = text.map(lambda s: normalise(str(s)))
    specialty = rows["medical_specialty"].astype(object).where(rows["medical_specialty"].notna(), "")
    frame = pd.DataFrame({"text": text, "specialty": specialty.map(lambda s: str(s).strip())})
    frame = frame[frame["text"] != ""]
    groups = frame.groupby("text", sort=False)
    specialties = groups["specialty"].agg(lambda s: tuple(sorted({x for x in s if x})))
    texts = np.array(list(specialties.index), dtype=object)
    spec = np.empty(len(texts), dtype=object)
    spec[:] = list(specialties.to_numpy())
    copies = groups.size().reindex(specialties.index).to_numpy(dtype=np.int64)
    return NoteCorpus(texts, spec, copies, source)


def _read_csv(path: Path) -> NoteCorpus:
    df = pd.read_csv(path, index_col=0, dtype=str, keep_default_na=False)
    missing = {"medical_specialty", "transcription"} - set(df.columns)
    if missing:
        raise ValueError(
            f"{path}: missing columns {sorted(missing)}; expected the Kaggle mtsamples.csv layout "
            f"(index,{','.join(COLUMNS)})"
        )
    df = df.apply(lambda col: col.str.strip()).replace("", np.nan)
    corpus = distinct_notes(df, str(path))
    if not len(corpus):
        raise ValueError(f"{path}: no transcriptions")
    return corpus


_FORMATS: list[tuple[str, Callable[[Path], NoteCorpus]]] = [
    ("mtsamples.csv", _read_csv),
    ("mtsamples.csv.gz", _read_csv),
]


HOW_TO_GET = "download mtsamples.csv (Kaggle data set tboyle10/medicaltranscriptions, CC0) into data_dir"


def search_dirs(name: str = "mtsamples", data_dir: Optional[str] = None) -> list[Path]:
    """The folders looked in, in order."""
    return locate.search_dirs(name, data_dir)


def find(name: str = "mtsamples", data_dir: Optional[str] = None) -> Optional[Path]:
    """The first MTSamples file found, or None."""
    hit = locate.find(search_dirs(name, data_dir), _FORMATS)
    return hit[0] if hit else None


def load_mtsamples(data_dir: Optional[str] = None) -> NoteCorpus:
    """MTSamples' distinct notes from the first place and format found; DataMissing names the fix."""
    return locate.load_first("mtsamples", search_dirs("mtsamples", data_dir), _FORMATS, HOW_TO_GET)


# ---------------------------------------------------------------------------------------------------
# The built-in corpus: template notes with per-patient details, for the demo and the tests. Each
# specialty has its own sentences and words (a near shift between specialties); a note's ages, doses,
# dates, vital signs and names make it unique, which a model can memorise. Reviews are the far shift.

SYNTHETIC_SPECIALTIES = {
    "Cardiology": (
        ["chest pain", "palpitations", "shortness of breath", "syncope", "edema"],
        ["metoprolol", "lisinopril", "atorvastatin", "aspirin", "furosemide"],
        ["echocardiogram", "stress test", "cardiac catheterization", "holter monitor"],
    ),
    "Orthopedic": (
        ["knee pain", "shoulder pain", "ankle swelling", "back pain", "wrist fracture"],
        ["ibuprofen", "naproxen", "tramadol", "acetaminophen", "meloxicam"],
        ["arthroscopy", "x-ray", "mri of the knee", "cast application"],
    ),
    "Gastroenterology": (
        ["abdominal pain", "nausea", "heartburn", "rectal bleeding", "diarrhea"],
        ["omeprazole", "pantoprazole", "ondansetron", "mesalamine", "loperamide"],
        ["colonoscopy", "upper endoscopy", "abdominal ultrasound", "ct of the abdomen"],
    ),
    "Neurology": (
        ["headache", "numbness", "dizziness", "seizure", "memory loss"],
        ["levetiracetam", "gabapentin", "sumatriptan", "topiramate", "donepezil"],
        ["eeg", "mri of the brain", "nerve conduction study", "lumbar puncture"],
    ),
    "Urology": (
        ["flank pain", "hematuria", "urinary frequency", "dysuria", "kidney stone"],
        ["tamsulosin", "finasteride", "oxybutynin", "ciprofloxacin", "nitrofurantoin"],
        ["cystoscopy", "renal ultrasound", "urodynamic study", "ureteroscopy"],
    ),
    "Dermatology": (
        ["rash", "itching", "skin lesion", "acne", "hair loss"],
        ["hydrocortisone", "tretinoin", "doxycycline", "clobetasol", "ketoconazole"],
        ["skin biopsy", "cryotherapy", "patch testing", "excision"],
    ),
    "Psychiatry": (
        ["low mood", "anxiety", "insomnia", "panic attacks", "poor concentration"],
        ["sertraline", "escitalopram", "bupropion", "quetiapine", "lorazepam"],
        ["psychotherapy", "mental status examination", "phq-9 screening", "safety assessment"],
    ),
    "Ophthalmology": (
        ["blurred vision", "eye pain", "floaters", "red eye", "double vision"],
        ["latanoprost", "timolol", "prednisolone drops", "artificial tears", "moxifloxacin"],
        ["slit lamp examination", "fundoscopy", "visual field test", "cataract extraction"],
    ),
}
_NAMES = [
    "adams", "baker", "chen", "diaz", "evans", "fischer", "garcia", "hughes", "ibrahim", "jones",
    "kim", "lopez", "miller", "nguyen", "olsen", "patel", "quinn", "rossi", "smith", "tanaka",
]  # fmt: skip
_SEXES = ["male", "female"]
_HISTORY = ["hypertension", "diabetes", "asthma", "hyperlipidemia", "obesity", "smoking", "depression"]
_REVIEW_WORDS = (
    ["film", "movie", "story", "plot", "acting", "director", "script", "ending", "cast", "soundtrack"],
    ["wonderful", "boring", "brilliant", "awful", "moving", "predictable", "funny", "slow", "tense"],
    ["loved", "hated", "enjoyed", "watched", "recommend", "forgot", "laughed at", "cried at"],
)


def _note(rng: np.random.Generator, specialty: str) -> str:
    complaints, drugs, tests = SYNTHETIC_SPECIALTIES[specialty]
    c1, c2 = rng.choice(complaints, 2, replace=False)
    drug, test = rng.choice(drugs), rng.choice(tests)
    history = ", ".join(rng.choice(_HISTORY, rng.integers(1, 4), replace=False))
    age, sex = int(rng.integers(18, 95)), rng.choice(_SEXES)
    dose, days = int(rng.choice([5, 10, 20, 25, 40, 50, 100, 200, 500])), int(rng.integers(2, 60))
    bp, hr = f"{int(rng.integers(95, 180))}/{int(rng.integers(55, 105))}", int(rng.integers(48, 130))
    name, followup = rng.choice(_NAMES), int(rng.integers(1, 12))
    sentences = [
        f"history of present illness: this {age}-year-old {sex} presents with {c1} for {days} days.",
        f"the patient also reports {c2}. past medical history is significant for {history}.",
        f"vital signs: blood pressure {bp}, heart rate {hr}, temperature {36 + rng.random() * 2.5:.1f}.",
        f"the patient was started on {drug} {dose} mg daily and referred for {test}.",
        f"assessment: {c1} with {c2}, likely related to {rng.choice(complaints)}.",
        f"plan: follow up with dr. {name} in {followup} weeks, sooner if symptoms worsen.",
    ]
    keep = [0, 1, 2, 3] + [i for i in (4, 5) if rng.random() < 0.8]
    return " ".join(sentences[i] for i in keep)


def synthetic_notes(n_notes: int = 600, seed: int = 0) -> NoteCorpus:
    """``n_notes`` distinct template notes spread over the specialties of ``SYNTHETIC_SPECIALTIES``; as in
    MTSamples, most are filed twice (under a second specialty) and some three times."""
    rng = np.random.default_rng(seed)
    names = list(SYNTHETIC_SPECIALTIES)
    rows = []
    seen: set[str] = set()
    while len(seen) < n_notes:
        specialty = names[int(rng.integers(len(names)))]
        text = normalise(_note(rng, specialty))
        if text in seen:
            continue
        seen.add(text)
        copies = int(rng.choice([1, 2, 3], p=[0.1, 0.73, 0.17]))
        for extra in ["Consult", "Office Notes"][: copies - 1]:
            rows.append({"medical_specialty": extra, "transcription": text})
        rows.append({"medical_specialty": specialty, "transcription": text})
    return distinct_notes(pd.DataFrame(rows), "synthetic")


def synthetic_reviews(n: int, seed: int = 0) -> np.ndarray:
    """``n`` short movie reviews (the far shift of the built-in corpus), object array of str."""
    rng = np.random.default_rng(seed + 104729)
    things, adjectives, verbs = _REVIEW_WORDS
    out = []
    for _ in range(n):
        parts = [
            f"i {rng.choice(verbs)} this {rng.choice(things)}, the {rng.choice(things)} was "
            f"{rng.choice(adjectives)} and the {rng.choice(things)} {rng.choice(adjectives)}."
            for _ in range(int(rng.integers(3, 8)))
        ]
        out.append(" ".join(parts) + f" {int(rng.integers(1, 11))} out of 10.")
    return np.array(out, dtype=object)
