"""``identifiers``: look-ups of invoice numbers, punctuated amounts, part codes and names.

300 short business records (invoices, shipments, part sheets, contracts) in the same
boilerplate, so their ordinary words are shared by all of them. Each holds identifiers that
differ from the ones in other records by a digit or a letter (``INV-2026-0042`` /
``INV-2026-0043``, ``7,431,902,115`` / ``7,431,902,116``, ``ZX-81B-Q`` / ``ZX-81B-R``) and a
made-up person and company name. Queries: the bare identifier, the identifier with words
around it, the bare number, the name - each answered by exactly one record.
"""

from __future__ import annotations

import random

from bench.datasets._words import Names

Set = tuple[dict[str, str], dict[str, str], dict[str, dict[str, int]]]

_BOILER = [
    "Payment is due within thirty days of the invoice date unless agreed otherwise in writing.",
    "All amounts are stated in US dollars and exclude applicable taxes and duties.",
    "Please quote the reference number on every remittance and in all correspondence.",
    "Goods remain the property of the supplier until payment has been received in full.",
    "Questions about this document should be sent to the accounts department.",
    "The parties agree that this record reflects the order as confirmed by both sides.",
]


def _amount(rng: random.Random) -> str:
    return f"{rng.randint(1, 9)},{rng.randint(0, 999):03d},{rng.randint(0, 999):03d},{rng.randint(0, 998):03d}"


def identifiers(n_records: int = 300) -> Set:
    rng = random.Random(11)
    names = Names(11)
    corpus: dict[str, str] = {}
    queries: dict[str, str] = {}
    qrels: dict[str, dict[str, int]] = {}
    seen: set[str] = set()

    def unique(make: object) -> str:
        while True:
            value = make()  # type: ignore[operator]
            if value not in seen:
                seen.add(value)
                return str(value)

    base_inv = rng.randint(10, 9000)
    for i in range(n_records):
        inv = f"INV-2026-{base_inv + i:04d}"  # neighbours differ by one digit
        amount = unique(lambda: _amount(rng))
        # the neighbouring amount (last digit + 1) goes into another record as a distractor
        part = unique(lambda: f"{rng.choice('XZQKV')}{rng.choice('XZQKV')}-{rng.randint(10, 99)}"
                      f"{rng.choice('ABCD')}-{rng.choice('QRST')}")
        person, company = names.person(), f"{names.word()} {rng.choice(['Ltd', 'GmbH', 'Inc', 'BV'])}"
        kind = ("Invoice", "Shipment notice", "Part sheet", "Service contract")[i % 4]
        lines = [
            f"{kind} {inv}",
            f"Issued to {company}, attention of {person}.",
            f"Line 1: {rng.randint(2, 90)} units of part {part} at the agreed unit price.",
            f"Total amount: {amount} USD.",
            f"Previous reference: INV-2026-{base_inv + (i + 1) % n_records:04d}.",
        ]
        boiler = rng.sample(_BOILER, 4)
        corpus[f"rec-{i:03d}"] = "\n".join(lines[:2] + boiler[:2] + lines[2:] + boiler[2:])
        variant = i % 5
        if variant == 0:
            query = inv
        elif variant == 1:
            query = f"{kind.lower()} {inv} total amount"
        elif variant == 2:
            query = amount
        elif variant == 3:
            query = f"which order mentions part {part}"
        else:
            query = f"documents addressed to {person}"
        queries[f"id{i:03d}"] = query
        qrels[f"id{i:03d}"] = {f"rec-{i:03d}": 1}
    # distractors: each amount's neighbour (last digit + 1) in another record, stated the same way
    ids = sorted(corpus)
    for i, doc_id in enumerate(ids):
        text = corpus[doc_id]
        amount = text.split("Total amount: ")[1].split(" ")[0]
        neighbour = amount[:-1] + str(int(amount[-1]) + 1)
        other = ids[(i + 7) % len(ids)]
        corpus[other] += f"\nAdjustment carried over: {neighbour} USD."
    return corpus, queries, qrels
