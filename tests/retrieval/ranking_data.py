"""Stores for the exact-term ranking tests: the issue's codename store and an invoice store."""

from __future__ import annotations

import random

# Made-up project names and codenames: each occurs in exactly one file.
PROJECTS = [
    ("Halvering", "Quillborne"), ("Mistral", "Obsidrake"), ("Tanager", "Fennowick"), ("Corvid", "Skaldmere"),
    ("Lantern", "Brisquet"), ("Juniper", "Vorthane"), ("Kestrel", "Palimund"), ("Meridian", "Tossaline"),
    ("Orchard", "Gravolet"), ("Pavilion", "Whistmoor"), ("Quarry", "Zendrical"), ("Rampart", "Caddowix"),
    ("Saffron", "Ulvenmark"), ("Trellis", "Morrowgate"), ("Umber", "Hexlarion"), ("Vantage", "Drumlowe"),
    ("Wicket", "Ostravane"), ("Yarrow", "Klemptide"), ("Zephyr", "Arvashel"), ("Bastion", "Nimbrecht"),
]
LONG = {1, 3, 4, 7, 9, 12, 14, 16, 18}  # these 9 hide the sentence inside a page of filler

_SUBJECTS = ["The committee", "Our team", "The regional office", "The new supplier", "Management", "The auditor",
             "Each department", "The warehouse crew", "The customer panel", "The city council"]
_VERBS = ["reviewed", "discussed", "postponed", "approved", "summarised", "questioned", "updated", "published"]
_OBJECTS = ["the quarterly budget", "the holiday schedule", "the parking rules", "the cafeteria menu",
            "the safety checklist", "the travel policy", "the printer contract", "the training plan",
            "the office layout", "the recycling targets"]
_TAILS = ["before the end of the month.", "after a long meeting.", "with minor changes.", "for the second time.",
          "without much debate.", "at the request of the board.", "in the weekly newsletter.", "on Tuesday."]


def filler_page(seed: int, words: int = 600) -> str:
    rng = random.Random(seed)
    out: list[str] = []
    count = 0
    while count < words:
        sentence = f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)} {rng.choice(_TAILS)}"
        out.append(sentence)
        count += len(sentence.split())
    return " ".join(out)


def sentence(i: int) -> str:
    name, code = PROJECTS[i]
    return f"The secret codename for project {name} is {code}."


def codename_files() -> dict[str, bytes]:
    """20 files, one unique sentence each; 9 of them inside ~1,200 words of ordinary filler."""
    files = {}
    for i in range(len(PROJECTS)):
        if i in LONG:
            page = filler_page(i).split(". ")
            middle = len(page) // 2
            text = ". ".join(page[:middle]) + ". " + sentence(i) + " " + ". ".join(page[middle:])
            text += " " + filler_page(100 + i)
        else:
            text = sentence(i)
        files[f"project-{i:02d}.txt"] = text.encode()
    return files


_TERMS = ("Payment is due within thirty days. All amounts are in US dollars and exclude taxes. "
          "Please quote the invoice number on every remittance.")

INVOICES = {
    "invoice-0042.txt": f"Invoice INV-2026-0042\nBilled to Harlow Brennan Ltd.\nTotal due: 7,431,902,115 USD.\n{_TERMS}",
    "invoice-0043.txt": f"Invoice INV-2026-0043\nBilled to Osric Pellham GmbH.\nTotal due: 7,431,902,116 USD.\n{_TERMS}",
    "invoice-0044.txt": f"Invoice INV-2026-0044\nBilled to Harlow Brennan Ltd.\nTotal due: 1,902,431,115 USD.\n{_TERMS}",
    "invoice-0142.txt": f"Invoice INV-2025-0042\nBilled to Tamsin Roake Inc.\nTotal due: 431,902 USD.\n{_TERMS}",
    "summary-2026.txt": (
        "Invoice summary for 2026. Ticket 0042 was closed in 2026. This year we issued 7 invoices, sent 431 "
        "reminders, posted 902 letters and shipped 115 parcels; invoice totals in USD are listed per invoice. "
        "INV is the prefix of every invoice number. " + _TERMS
    ),
}
