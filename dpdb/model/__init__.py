"""The table model: felis files (:mod:`.felis`), dpdb's physical layout of each table (:mod:`.layout`),
and the DDL made from both (:mod:`.ddl`)."""
