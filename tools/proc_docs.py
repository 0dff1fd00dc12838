"nbdev_proc_nbs without its quarto install, its pip install and its everything-in-nbs sidebar: writes _proc/."
import nbdev.quarto as q

if __name__ == '__main__':      # guard needed: processing uses a process pool
    q._ensure_quarto = lambda: None
    q._pre_docs()
