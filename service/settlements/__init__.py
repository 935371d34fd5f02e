"""A settlement's whole path, for both entry points: the gate (`gate.py`: decide one request,
claim, send it on, answer) and the consumers (`stream.py`: a batch of the settlements topic
decided, recorded in one transaction, its effects applied to the first-seen set, its flags
published). `events.py` is the topic's typed schema both speak."""
