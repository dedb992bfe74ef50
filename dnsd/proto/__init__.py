"""Wire format: the header check, parsing the question and OPT, rendering replies, records as plain values."""
