"""The data core every data command stands on: errors and the bad-line policy, input sources, atomic
output, tokenizer loading and the command-line exit policy."""
