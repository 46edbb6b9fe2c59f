"""Fast paths: runs of the kernel's steps taken at once, with the outcome of taking them
one by one.  They have no kernel counterpart; each kernel function that has one calls it
at a single seam ("if the fast path can take this run at once, let it") and otherwise
goes on step by step.

  cleanfile.py  limit-reclaim episodes that only evict clean page cache from a leaf
                group's inactive file list, at once (mm/vmscan.c do_try_to_free_pages)
  fault.py      anonymous faults in spans of many FAULT_BATCH steps (mm/memory.c)
  ratelimit.py  the event ratelimit of many commits in closed form (mm/memcontrol-v1.c)
  read.py       reads of many batches at once with room in the group (mm/filemap.c)
  stream.py     whole reclaim cycles of a read streaming through a full group (mm/vmscan.c)
  swapout.py    small reclaim batches of anon and shmem pages decided in plain integers
                (mm/vmscan.c shrink_folio_list), whole limit-reclaim episodes of a
                leaf group's anon list into swap at once (do_try_to_free_pages), and
                runs of one-page charges each through such an episode
                (mm/memcontrol.c try_charge_memcg)
  swapspan.py   anonymous fault steps at the limit in spans, each step's charges through
                limit-reclaim episodes into swap, planned in integers (mm/memory.c)
  swaprotate.py a limit-reclaim episode that keeps the young pages at the tail of the
                anon list and evicts those behind them, taken at once (mm/vmscan.c)
  shmem.py      shmem faults in spans of many FILEMAP_BATCH steps, through a full group
                into swap: their charges, episodes and node charges planned in integers
                (mm/shmem.c shmem_fault)
  softlimit.py  the walks of soft-limit reclaim that evict clean page cache, at once
                (mm/vmscan.c mem_cgroup_soft_reclaim)
  window.py     the large folios of a readahead window with room for them: up to the low
                watermark, the group's margin and its usage thresholds
                (mm/readahead.c page_cache_ra_order)

The fast paths build on the kernel modules they serve, so those reach them through
late imports at their seams; this package itself imports nothing.
"""

# Take the fast paths.  False: every step through the kernel's algorithm alone (the
# equivalence tests run each workload both ways and compare everything).
ENABLED = True
