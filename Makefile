# Convenience targets; ./run.sh does the work (and installs what is missing).
.PHONY: demo test bench
demo:
	./run.sh demo
test:
	./run.sh test
bench:
	./run.sh bench
