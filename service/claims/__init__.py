"""The claim vocabulary every layer above shares: what the first-seen set holds for a code, a
change to it, a payment, a first payment's details, and the token naming a (settlement, line).
Pure values, no I/O: decisions, firstseen, records and flags all speak it, none owns it."""
