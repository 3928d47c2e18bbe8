"""Text normalisers for the standard metrics (our own code; the rules are written out here).

`english(text)`, for WER (in the spirit of Whisper's English normaliser, smaller), in this order:
  1. lower case; curly quotes to straight ones;
  2. spans in brackets or parentheses are removed: `[noise]`, `(laughs)`, `<unk>`, `{..}`;
  3. filler words removed: uh, um, umm, hmm, mm, mhm, er, ah;
  4. numbers, lightly: thousands separators dropped (`1,000` → `1000`), `%` → ` percent`,
     number words below 100 to digits (`twenty-one`, `twenty one` → `21`, `seven` → `7`);
     larger spelled-out numbers are left alone;
  5. punctuation and symbols to spaces, except apostrophes inside words (`don't`) and the point
     of a decimal number (`2.5`); leading/trailing apostrophes go;
  6. whitespace collapsed to single spaces.

`vqa_answer(text)`, VQA answer normalisation as the official VQA evaluation does it:
  punctuation is deleted where it joins a word (`yes.` → `yes`, `don't` kept as a contraction
  below) and replaced by a space elsewhere, except a comma between digits (`1,000` → `1000`) and
  a period of a decimal number; then per word: number words zero..ten to digits, the articles
  a/an/the dropped, apostrophe-less contractions restored (`dont` → `don't`).
"""

from __future__ import annotations

import re

_BRACKETS = re.compile(r"\[[^\]]*\]|\([^)]*\)|<[^>]*>|\{[^}]*\}")
_FILLERS = {"uh", "um", "umm", "hmm", "mm", "mhm", "er", "ah"}
_ONES = [
  "zero",
  "one",
  "two",
  "three",
  "four",
  "five",
  "six",
  "seven",
  "eight",
  "nine",
  "ten",
  "eleven",
  "twelve",
  "thirteen",
  "fourteen",
  "fifteen",
  "sixteen",
  "seventeen",
  "eighteen",
  "nineteen",
]
_TENS = {
  "twenty": 20,
  "thirty": 30,
  "forty": 40,
  "fifty": 50,
  "sixty": 60,
  "seventy": 70,
  "eighty": 80,
  "ninety": 90,
}
_UNITS = {w: i for i, w in enumerate(_ONES)}


def _numbers(words: list[str]) -> list[str]:
  """Number words below 100 to digits: a tens word takes a following unit 1..9 (`forty two`)."""
  out, i = [], 0
  while i < len(words):
    w = words[i]
    if w in _TENS:
      value = _TENS[w]
      nxt = words[i + 1] if i + 1 < len(words) else ""
      if 1 <= _UNITS.get(nxt, 0) <= 9:
        value, i = value + _UNITS[nxt], i + 1
      out.append(str(value))
    elif w in _UNITS:
      out.append(str(_UNITS[w]))
    else:
      out.append(w)
    i += 1
  return out


def english(text: str) -> str:
  """The WER normaliser (rules 1-6 in the module docstring)."""
  text = text.lower().replace("\u2019", "'").replace("\u2018", "'")
  text = _BRACKETS.sub(" ", text)
  text = re.sub(r"(?<=\d),(?=\d{3}\b)", "", text)
  text = text.replace("%", " percent ")
  text = re.sub(r"(?<=[a-z])-(?=[a-z])", " ", text)  # twenty-one → twenty one
  text = re.sub(r"(?<!\d)\.|\.(?!\d)", " ", text)  # keep 2.5, drop sentence periods
  text = re.sub(r"[^\w\s'.]|_", " ", text)
  words = [w.strip("'") for w in text.split()]
  words = [w for w in words if w and w not in _FILLERS]
  return " ".join(_numbers(words))


# ---- VQA --------------------------------------------------------------------------------------
_VQA_PUNCT = set(';/[]"{}()=+\\_-><@`,?!')  # the official list; apostrophes stay
_VQA_NUMBERS = {w: str(i) for i, w in enumerate(_ONES[:11])}
_VQA_NUMBERS["none"] = "0"
_ARTICLES = {"a", "an", "the"}
# Contractions written without the apostrophe, as annotators type them (a subset of the
# official table: the common ones).
_CONTRACTIONS = {
  "aint": "ain't",
  "arent": "aren't",
  "cant": "can't",
  "couldnt": "couldn't",
  "couldve": "could've",
  "didnt": "didn't",
  "doesnt": "doesn't",
  "dont": "don't",
  "hadnt": "hadn't",
  "hasnt": "hasn't",
  "havent": "haven't",
  "hes": "he's",
  "im": "i'm",
  "isnt": "isn't",
  "itll": "it'll",
  "ive": "i've",
  "lets": "let's",
  "mightnt": "mightn't",
  "mustnt": "mustn't",
  "shes": "she's",
  "shouldnt": "shouldn't",
  "shouldve": "should've",
  "thats": "that's",
  "theres": "there's",
  "theyre": "they're",
  "theyve": "they've",
  "wasnt": "wasn't",
  "werent": "weren't",
  "whats": "what's",
  "wheres": "where's",
  "whos": "who's",
  "wont": "won't",
  "wouldnt": "wouldn't",
  "wouldve": "would've",
  "youre": "you're",
  "youve": "you've",
  "yall": "y'all",
}


def _vqa_punctuation(text: str) -> str:
  # A comma between digits is a thousands separator: the whole answer keeps its punctuation
  # deleted (not spaced) then, as the official script does.
  digit_comma = re.search(r"(\d)(,)(\d)", text) is not None
  out = text
  for p in _VQA_PUNCT:
    if (p + " " in text or " " + p in text) or digit_comma:
      out = out.replace(p, "")
    else:
      out = out.replace(p, " ")
  return re.sub(r"(?<!\d)\.(?!\d)", "", out)  # a period not inside a decimal number


def vqa_answer(text: str) -> str:
  text = text.replace("\n", " ").replace("\t", " ").strip().lower()
  words = []
  for w in _vqa_punctuation(text).split():
    w = _VQA_NUMBERS.get(w, w)
    if w not in _ARTICLES:
      words.append(_CONTRACTIONS.get(w, w))
  return " ".join(words)
