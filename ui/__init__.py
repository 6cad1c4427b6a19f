"""Everything that touches Streamlit besides the page files: the frame every page runs in
(:mod:`ui.frame`), the URL (:mod:`ui.url`), the shared sidebar (:mod:`ui.sidebar`), shared
resources (:mod:`ui.resources`), uploads (:mod:`ui.uploads`), waiting for training
(:mod:`ui.training`), analysis cached per run (:mod:`ui.cached`) and drawing (:mod:`ui.draw`).
"""
