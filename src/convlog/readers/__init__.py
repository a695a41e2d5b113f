"""Reading a log for people and other tools: tail (follow), export (JSON, Markdown,
CSV, JSONL), play (publish a log back onto a bus at its own pace) and info.
"""
